"""The train stage as DVC runs it: killed mid-run it resumes, and ends where an uninterrupted run
ends; two runs with the same params give the same bytes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mnistflow.data.prepared import prepare, save_prepared
from mnistflow.params import PrepareParams
from mnistflow.training.input_shapes import input_shape_for
from tests.project_root import PROJECT_ROOT

# bf16 named, not auto: resume and determinism are pinned in bf16 on every host (auto takes
# float32 on CPUs without AMX); the determinism test runs float32 as well.
PARAMS = {
    "model": {"name": "cnn"},
    "train": {"epochs": 3, "batch_size": 64, "device": "cpu", "mixed_precision": "bf16"},
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, mnist_slice) -> Path:
    folder = tmp_path_factory.mktemp("train-stage")
    data, _ = prepare(
        mnist_slice.as_npz_dict(),
        PrepareParams(max_train_images=1500, max_test_images=200),
        input_shape_for("cnn"),
    )
    save_prepared(data, folder / "prepared")
    (folder / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    float32 = {**PARAMS, "train": {**PARAMS["train"], "mixed_precision": False}}
    (folder / "float32-params.yaml").write_text(yaml.safe_dump(float32))
    return folder


def run_train(
    workspace: Path,
    run: str,
    kill_after_epoch: int | None = None,
    code: Path = PROJECT_ROOT,
    params: str = "params.yaml",
):
    """The train stage in a subprocess, importing the project (mnistflow, stages) from `code`."""
    out = workspace / run
    arguments = [
        "--params", str(workspace / params),
        "--data", str(workspace / "prepared"),
        "--model", str(out / "model.keras"),
        "--live", str(out / "live"),
        "--summary", str(out / "train.json"),
        "--checkpoints", str(out / "checkpoint"),
    ]  # fmt: skip
    if kill_after_epoch is None:
        command = [sys.executable, "-m", "stages.train", *arguments]
    else:
        helper = str(PROJECT_ROOT / "tests" / "train_until_killed.py")
        command = [sys.executable, helper, str(kill_after_epoch), *arguments]
    environment = {**os.environ, "PYTHONPATH": str(code)}
    return subprocess.run(
        command, cwd=workspace, env=environment, capture_output=True, text=True, timeout=600
    )


def epoch_rows(live: Path) -> dict[str, list[str]]:
    """DVCLive's per-epoch values, without its wall-clock timestamps."""
    rows = {}
    for tsv in sorted((live / "plots" / "metrics").rglob("*.tsv")):
        lines = tsv.read_text().splitlines()
        rows[str(tsv.relative_to(live))] = ["\t".join(line.split("\t")[1:]) for line in lines]
    return rows


@pytest.fixture(scope="module")
def uninterrupted(workspace) -> subprocess.CompletedProcess:
    """One uninterrupted bf16 run (in `uninterrupted/`): the resumed run's reference and the
    determinism test's first bf16 run."""
    result = run_train(workspace, "uninterrupted")
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def killed(workspace) -> Path:
    """A bf16 run killed (SIGKILL) right after epoch 1's checkpoint, in `killed/`; each test
    resumes (or refuses) a copy of it."""
    result = run_train(workspace, "killed", kill_after_epoch=1)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    return workspace / "killed"


def copy_of(killed: Path, name: str) -> Path:
    """The killed run's folder (checkpoint and DVCLive's rows) as another run's output."""
    out = killed.parent / name
    shutil.copytree(killed, out)
    return out


def test_killed_run_resumes_and_matches_an_uninterrupted_run(workspace, uninterrupted, killed):
    assert not (killed / "model.keras").exists()  # never a half-written model
    [snapshot] = (killed / "checkpoint").glob("epoch-0001-*")
    state = json.loads((snapshot / "state.json").read_text())
    assert state["epochs_done"] == 1

    out = copy_of(killed, "resumed")
    resumed = run_train(workspace, "resumed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from the checkpoint" in resumed.stderr
    assert "after epoch 1 of 3" in resumed.stderr
    assert "Epoch 2/3" in resumed.stdout and "Epoch 1/3" not in resumed.stdout
    assert not (out / "checkpoint").exists()  # removed once the model is saved

    reference = workspace / "uninterrupted"
    assert (out / "model.keras").read_bytes() == (reference / "model.keras").read_bytes()
    assert (out / "live" / "metrics.json").read_text() == (
        reference / "live" / "metrics.json"
    ).read_text()
    assert epoch_rows(out / "live") == epoch_rows(reference / "live")
    assert len(epoch_rows(out / "live")["plots/metrics/eval/accuracy.tsv"]) == 1 + 3
    summary = json.loads((out / "train.json").read_text())
    assert summary["resumed_from_epoch"] == 1 and summary["epochs_run"] == 3
    reference_summary = json.loads((reference / "train.json").read_text())
    assert summary["best_epoch"] == reference_summary["best_epoch"]
    assert summary["best_val_accuracy"] == reference_summary["best_val_accuracy"]


@pytest.mark.parametrize("precision", ["bf16", "float32"])
def test_two_runs_give_identical_weights_and_metrics(workspace, request, precision):
    if precision == "bf16":
        # The module's uninterrupted run has these params: it is the first of the two.
        first, a = request.getfixturevalue("uninterrupted"), workspace / "uninterrupted"
    else:
        first = run_train(workspace, "first-float32", params="float32-params.yaml")
        a = workspace / "first-float32"
    params = "params.yaml" if precision == "bf16" else "float32-params.yaml"
    second = run_train(workspace, f"second-{precision}", params=params)
    assert first.returncode == 0 and second.returncode == 0, second.stderr[-3000:]
    policy = "mixed_bfloat16" if precision == "bf16" else "float32"
    assert f"precision={policy}" in first.stderr and f"precision={policy}" in second.stderr
    b = workspace / f"second-{precision}"
    assert (a / "model.keras").read_bytes() == (b / "model.keras").read_bytes()
    assert (a / "live" / "metrics.json").read_text() == (b / "live" / "metrics.json").read_text()
    assert epoch_rows(a / "live") == epoch_rows(b / "live")


def test_checkpoint_of_other_params_is_ignored(workspace, killed):
    out = copy_of(killed, "changed")
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["train"]["seed"] = 7
    (workspace / "changed-params.yaml").write_text(yaml.safe_dump(params))
    rerun = subprocess.run(
        [
            sys.executable,
            "-m",
            "stages.train",
            "--params",
            str(workspace / "changed-params.yaml"),
            "--data",
            str(workspace / "prepared"),
            "--model",
            str(out / "model.keras"),
            "--live",
            str(out / "live"),
            "--summary",
            str(out / "train.json"),
            "--checkpoints",
            str(out / "checkpoint"),
        ],  # fmt: skip
        cwd=workspace,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "written for other params, data, training code" in rerun.stderr
    assert json.loads((out / "train.json").read_text())["resumed_from_epoch"] == 0
    assert "Epoch 1/3" in rerun.stdout


def test_checkpoint_of_other_training_code_is_not_resumed(workspace, killed, tmp_path):
    """Same params, same data, but the model code changed: the checkpoint must not be used."""
    copy_of(killed, "recoded")
    code = tmp_path / "code"
    for package in ("mnistflow", "stages"):
        shutil.copytree(PROJECT_ROOT / package, code / package,
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    models = code / "mnistflow" / "training" / "models.py"
    models.write_text(models.read_text() + "\n# a change to the model code\n")

    rerun = run_train(workspace, "recoded", code=code)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "ignoring the checkpoint" in rerun.stderr
    assert "Epoch 1/3" in rerun.stdout
    out = workspace / "recoded"
    assert json.loads((out / "train.json").read_text())["resumed_from_epoch"] == 0
