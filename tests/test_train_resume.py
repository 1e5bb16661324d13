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


def test_killed_run_resumes_and_matches_an_uninterrupted_run(workspace):
    uninterrupted = run_train(workspace, "uninterrupted")
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]

    killed = run_train(workspace, "resumed", kill_after_epoch=1)
    out = workspace / "resumed"
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (out / "model.keras").exists()  # never a half-written model
    [snapshot] = (out / "checkpoint").glob("epoch-0001-*")
    state = json.loads((snapshot / "state.json").read_text())
    assert state["epochs_done"] == 1

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
def test_two_runs_give_identical_weights_and_metrics(workspace, precision):
    params = "params.yaml" if precision == "bf16" else "float32-params.yaml"
    first = run_train(workspace, f"first-{precision}", params=params)
    second = run_train(workspace, f"second-{precision}", params=params)
    assert first.returncode == 0 and second.returncode == 0, second.stderr[-3000:]
    policy = "mixed_bfloat16" if precision == "bf16" else "float32"
    assert f"precision={policy}" in first.stderr
    a, b = workspace / f"first-{precision}", workspace / f"second-{precision}"
    assert (a / "model.keras").read_bytes() == (b / "model.keras").read_bytes()
    assert (a / "live" / "metrics.json").read_text() == (b / "live" / "metrics.json").read_text()
    assert epoch_rows(a / "live") == epoch_rows(b / "live")


def test_checkpoint_of_other_params_is_ignored(workspace):
    killed = run_train(workspace, "changed", kill_after_epoch=1)
    assert killed.returncode == -signal.SIGKILL
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["train"]["seed"] = 7
    (workspace / "changed-params.yaml").write_text(yaml.safe_dump(params))
    out = workspace / "changed"
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


def test_checkpoint_of_other_training_code_is_not_resumed(workspace, tmp_path):
    """Same params, same data, but the model code changed: the checkpoint must not be used."""
    killed = run_train(workspace, "recoded", kill_after_epoch=1)
    assert killed.returncode == -signal.SIGKILL
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
