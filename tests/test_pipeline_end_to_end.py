"""The real `dvc repro` on a small params set, in throwaway git repositories.

One module-scoped workspace is reproduced once; each test then checks one promise:
nothing re-runs when nothing changed, a params change re-runs only what depends on it,
two independent runs agree, and push/pull restore outputs byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml

from mnistflow.training.checkpoints import snapshots
from tests.project_root import PROJECT_ROOT
from tests.small_mnist import TEST_IMAGES, TRAIN_IMAGES, small_mnist_source
from tests.stage_deps import stages_importing

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "mnistflow tests",
    "GIT_AUTHOR_EMAIL": "tests@mnistflow.invalid",
    "GIT_COMMITTER_NAME": "mnistflow tests",
    "GIT_COMMITTER_EMAIL": "tests@mnistflow.invalid",
}
SMALL_PARAMS = {
    # Training on 1,350 images and evaluating on 500: what these tests prove (which stages
    # run, records, restores, faults) holds at any size, and every stage run costs less.
    "prepare": {"max_train_images": 1500, "max_test_images": 500},
    "train": {"epochs": 1, "device": "cpu"},
    # One epoch on 1,350 images reaches about 0.75, not the default floor of 0.99.
    "export": {"min_accuracy": {"cnn": 0.5, "mlp": 0.5, "softmax": 0.5}},
}
STAGES = ("ingest", "validate", "prepare", "train", "evaluate", "export")


def environment() -> dict[str, str]:
    env = {**os.environ, **GIT_IDENTITY, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def run(command: list[str], cwd: Path, expect_failure: bool = False) -> str:
    result = subprocess.run(
        command, cwd=cwd, env=environment(), capture_output=True, text=True, check=False
    )
    if expect_failure:
        assert result.returncode != 0, f"{' '.join(command)} succeeded unexpectedly"
    elif result.returncode != 0:
        raise AssertionError(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result.stdout + result.stderr


def dvc(*arguments: str, cwd: Path, expect_failure: bool = False) -> str:
    return run([sys.executable, "-m", "dvc", *arguments], cwd, expect_failure)


def epoch_rows(workspace: Path, metric: str) -> list[str]:
    """DVCLive's per-epoch rows of one metric, e.g. "eval/accuracy" (header dropped)."""
    tsv = workspace / "reports" / "training" / "plots" / "metrics" / f"{metric}.tsv"
    return tsv.read_text().splitlines()[1:]


def warnings(output: str) -> list[str]:
    """Warning lines (TensorFlow's absl start-up line among them, which the stages filter)."""
    return [line for line in output.splitlines() if "WARNING" in line]


# TensorFlow's start-up lines on a machine without a GPU (mnistflow/orchestration/stderr_filter.py).
TENSORFLOW_NOISE = ("cuInit", "Could not find cuda drivers", "oneDNN custom operations")


def changed_stage_names(workspace: Path) -> set[str]:
    """The stages `dvc status` reports as changed, less compute's "always changed" (it runs
    on every repro by design)."""
    status = json.loads(dvc("status", "--json", cwd=workspace))
    return {
        name.split(":")[-1] for name, entries in status.items() if entries != ["always changed"]
    }


def dvc_up_to_date(workspace: Path) -> bool:
    """`dvc status` reports nothing but the compute stage, which runs on every repro."""
    lines = [
        line.strip()
        for line in dvc("status", cwd=workspace).splitlines()
        if line.strip() and line.strip() not in ("compute:", "always changed")
    ]
    return lines in ([], ["Data and pipelines are up to date."])


def stages_ran(output: str) -> list[str]:
    return [stage for stage in STAGES if f"Running stage '{stage}'" in output]


def set_params(workspace: Path, overrides: dict) -> None:
    path = workspace / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in overrides.items():
        params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def copy_project(target: Path) -> Path:
    """The project's files as they are now (committed or not), as a fresh git repository."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        source = PROJECT_ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    # Each copy starts from nothing: no outputs, no lock from the developer's run.
    (target / "dvc.lock").unlink(missing_ok=True)
    for tracked_output in ("reports",):
        shutil.rmtree(target / tracked_output, ignore_errors=True)
    # No model released yet: the quality gate has only the floors in SMALL_PARAMS.
    (target / "release" / "baseline.json").write_text("{}\n")
    set_params(
        target,
        {
            **SMALL_PARAMS,
            "data": {"source": str(small_mnist_source())},
            "validate": {
                "train_size": TRAIN_IMAGES,
                "test_size": TEST_IMAGES,
            },
        },
    )
    run(["git", "init", "-q", "-b", "main"], target)
    run(["git", "add", "-A"], target)
    run(["git", "commit", "-q", "-m", "project"], target)
    return target


def lock_hashes(workspace: Path) -> dict[str, str]:
    lock = yaml.safe_load((workspace / "dvc.lock").read_text())
    return {
        f"{stage}:{out['path']}": out["md5"]
        for stage, body in lock["stages"].items()
        for out in body.get("outs", [])
    }


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory) -> tuple[Path, str]:
    workspace = copy_project(tmp_path_factory.mktemp("e2e") / "first")
    output = dvc("repro", cwd=workspace)
    run(["git", "add", "-A"], workspace)
    run(["git", "commit", "-q", "-m", "reproduced"], workspace)
    return workspace, output


def test_repro_runs_every_stage_and_writes_the_contract(reproduced):
    workspace, output = reproduced
    assert stages_ran(output) == list(STAGES)
    metrics = json.loads((workspace / "reports" / "metrics.json").read_text())
    assert set(metrics) == {"accuracy", "loss", "precision_macro", "recall_macro", "f1_macro"}
    assert 0.5 < metrics["accuracy"] <= 1.0
    assert (workspace / "models" / "model.keras").is_file()
    export_report = json.loads((workspace / "reports" / "export.json").read_text())
    assert export_report["argmax_agreement"] == 1.0 and export_report["max_abs_diff"] <= 1e-5
    # The hash consumers verify the model against, and the input checks it carries.
    onnx_bytes = (workspace / "models" / "model.onnx").read_bytes()
    assert export_report["onnx_sha256"] == hashlib.sha256(onnx_bytes).hexdigest()
    metadata = {p.key: p.value for p in onnx.load_from_string(onnx_bytes).metadata_props}
    assert json.loads(metadata["input_checks"])["train_size"] == TRAIN_IMAGES
    assert len(epoch_rows(workspace, "eval/accuracy")) == SMALL_PARAMS["train"]["epochs"]
    shown = dvc("metrics", "show", "--json", cwd=workspace)
    assert "f1_macro" in shown and "best_val_accuracy" in shown and "tensorflow" in shown
    # DVCLive runs inside `dvc repro` without warnings and without touching dvc.yaml, and
    # TensorFlow's CUDA start-up noise is filtered out on this GPU-less machine.
    assert warnings(output) == [] and "save_dvc_exp" not in output
    if not Path("/proc/driver/nvidia/version").exists():
        assert [noise for noise in TENSORFLOW_NOISE if noise in output] == []
    for picture in ("misclassified.png", "first_layer.png"):
        assert (workspace / "reports" / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Data and weights are DVC's, not git's.
    tracked = run(["git", "ls-files"], workspace).split()
    assert "data/raw/mnist.npz" not in tracked and "models/model.keras" not in tracked


# An external reference of any kind: a URL or protocol-relative address in an attribute,
# a CSS url()/@import, or a script/link/iframe element that loads something.
EXTERNAL = re.compile(
    r"""(?:src|href|action|poster|data|srcset)\s*=\s*["']?\s*(?:https?:|ftp:|//)"""
    r"""|url\(\s*["']?\s*(?:https?:|//)|@import|<script[^>]+src=|<link[^>]+href=|<iframe""",
    re.IGNORECASE,
)


def test_the_report_is_complete_offline_and_agrees_with_the_reports(reproduced):
    workspace, _ = reproduced
    output = run([sys.executable, "-m", "mnistflow", "report"], workspace)
    path = workspace / "reports" / "report.html"
    assert "report.html" in output and path.is_file()
    html = path.read_text(encoding="utf-8")
    assert EXTERNAL.findall(html) == []
    assert "<script" not in html  # nothing to run, nothing to fetch
    sections = dict(re.findall(r'<section id="(\w+)">(.*?)</section>', html, re.DOTALL))
    assert list(sections) == [
        "run",
        "data",
        "training",
        "evaluation",
        "release",
        "serving",
        "environment",
    ]
    assert all("was not written" not in body for body in sections.values())
    # The figures are the reports' own.
    metrics = json.loads((workspace / "reports" / "metrics.json").read_text())
    shown = dict(re.findall(r'data-metric="(\w+)" data-value="([^"]+)"', html))
    assert {name: float(value) for name, value in shown.items()} == metrics
    validation = json.loads((workspace / "reports" / "validation.json").read_text())
    checks = re.findall(r'data-check="([\w.]+)"', sections["data"])
    assert checks == [f"{e['table']}.{e['name']}" for e in validation["expectations"]]
    assert f"{validation['checks_total']} of {validation['checks_total']} checks passed" in html
    export = json.loads((workspace / "reports" / "export.json").read_text())
    assert export["verdict"] in sections["release"] and export["onnx_sha256"] in html
    assert f'data-released="{str(export["released"]).lower()}"' in html
    # The int8 model's own verdict and figures beside the float32 one's.
    assert export["int8"]["verdict"] in sections["release"]
    assert f'data-int8-released="{str(export["int8"]["released"]).lower()}"' in html
    assert export["int8"]["onnx_sha256"] in sections["release"]
    # DVC's three plot definitions as inline SVG (curves in training, confusion matrix in
    # evaluation), and both pictures of this run and of the baseline (the last commit).
    assert sections["training"].count("<svg") == 2 and sections["evaluation"].count("<svg") == 1
    assert "Loss per epoch" in sections["training"] and "Confusion matrix" in html
    assert len(re.findall(r'src="data:image/png;base64,', sections["evaluation"])) == 4
    # The data section pictures the labels the label check doubts most, per split, and shows
    # the drift against the reference.
    assert len(re.findall(r'src="data:image/png;base64,', sections["data"])) == 2
    assert "Most suspicious train labels" in sections["data"]
    assert "Against the reference" in sections["data"] and "train, worst class" in sections["data"]
    assert len(re.findall(r'<tr data-class="\d">', html)) == 10
    assert "tensorflow" in sections["environment"] and "last commit" in sections["run"]


def test_a_report_built_from_the_same_inputs_is_kept_and_any_change_rebuilds_it(reproduced):
    from mnistflow.reporting.gather import gather
    from mnistflow.reporting.page import refresh_report
    from mnistflow.reporting.summary import summary_of

    workspace, _ = reproduced
    page = workspace / "reports" / "report.html"
    up_to_date = [{"stage": name, "ran": False, "seconds": 0.2} for name in STAGES]

    def rebuilt(stages=up_to_date) -> bool:
        return refresh_report(workspace, stages)[2]

    assert rebuilt()  # the page there carries no fingerprint yet
    built = page.stat().st_mtime_ns
    path, kept, again = refresh_report(workspace, up_to_date)
    assert not again and page.stat().st_mtime_ns == built
    # The kept page's summary (read back from it) is the one a full rebuild gives.
    assert kept == summary_of(gather(workspace), path) and kept["metrics"]
    # The right fingerprint beside a baseline record that is not one (a field of the wrong
    # kind, a terminal escape in a text, a figure no metric has) makes a new page: nothing
    # unchecked reaches the terminal or the artifacts.
    import html

    figures = {row["metric"]: row["baseline"] for row in kept["metrics"]}
    escaping = {"baseline": {"label": "\x1b]0;owned\x07", "revision": "HEAD"}, "metrics": figures}
    huge = {"baseline": None, "metrics": {**figures, "accuracy": 10**400}}
    shown = page.read_text(encoding="utf-8")
    planted_records = [html.escape(json.dumps(record)) for record in (escaping, huge)]
    for forged in ("{&#34;verdict&#34;: 1}", *planted_records):
        planted = re.sub(
            r'(name="mnistflow-baseline" content=")[^"]*',
            lambda found, forged=forged: found.group(1) + forged,
            shown,
        )
        assert planted != shown
        page.write_text(planted, encoding="utf-8")
        assert rebuilt() and forged not in page.read_text(encoding="utf-8")
        shown = page.read_text(encoding="utf-8")
    # Each kind of input the page shows rebuilds it once.
    assert rebuilt([{**up_to_date[0], "ran": True}, *up_to_date[1:]]) and rebuilt()
    assert not rebuilt([{**stage, "seconds": 9.9} for stage in up_to_date])  # timings are not
    run(["git", "tag", "freshness-test"], workspace)  # a registry tag, a record, a branch
    try:
        assert rebuilt() and not rebuilt()
    finally:
        run(["git", "tag", "-d", "freshness-test"], workspace)
    params = workspace / "params.yaml"
    original = params.read_text(encoding="utf-8")
    try:
        params.write_text(original + "# a comment\n", encoding="utf-8")
        assert rebuilt() and not rebuilt()
        params.write_text(original + "# another comment\n", encoding="utf-8")  # same status
        assert rebuilt()
    finally:
        params.write_text(original, encoding="utf-8")
    statistics = workspace / "predictions" / "inbox" / "statistics"
    statistics.mkdir(parents=True)
    try:
        (statistics / "run.json").write_text("{}", encoding="utf-8")
        assert rebuilt() and not rebuilt()
    finally:
        shutil.rmtree(workspace / "predictions")
    assert rebuilt() and not rebuilt()
    # A link in the page's place is never read: the page is built again, as a file.
    stand_in = workspace / "reports" / "stand-in.html"
    page.rename(stand_in)
    page.symlink_to(stand_in)
    try:
        assert rebuilt() and not page.is_symlink()
    finally:
        stand_in.unlink()


def test_dvc_plots_show_draws_offline(reproduced, tmp_path):
    workspace, _ = reproduced
    dvc("plots", "show", "-o", str(tmp_path / "plots"), cwd=workspace)
    page = (tmp_path / "plots" / "index.html").read_text(encoding="utf-8")
    # The project's template carries Vega itself: no CDN tags, every plot embedded.
    assert "cdn.jsdelivr.net" not in page and not re.search(r"<script[^>]+src=", page)
    assert page.count("vegaEmbed(") >= 3 and "Loss per epoch" in page
    assert len(page) > 500_000  # the bundled libraries, not a link to them


def test_the_run_summary_fits_in_100_columns(reproduced):
    import io

    from rich.console import Console

    from mnistflow.reporting.gather import gather
    from mnistflow.reporting.summary import print_summary, summary_of

    workspace, _ = reproduced
    inputs = gather(workspace)
    summary = summary_of(inputs, workspace / "reports" / "report.html")
    stages = [{"stage": name, "ran": True, "seconds": 12.5} for name in STAGES]
    console = Console(file=io.StringIO(), width=100, record=True)
    record = (
        "experiment run-20261123-020004-517 (abcdef0), pushed to git remote origin, DVC remote "
        "storage; registered as mnist-classifier v0.2.0 [prod]"
    )  # ~130 characters, and rich markup-like text that must stay text
    print_summary(stages, summary, record, console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 100
    assert " ".join(text.split()).count(record) == 1  # wrapped, never cut
    metrics = json.loads((workspace / "reports" / "metrics.json").read_text())
    for name, value in metrics.items():
        assert re.search(rf"{name}\s+{value:.4f}\s+{value:.4f}\s+\+0\.0000", text), name
    assert "gates" in text and "report.html" in text and summary["verdict"] in text


def test_second_repro_changes_nothing(reproduced):
    workspace, _ = reproduced
    output = dvc("repro", cwd=workspace)
    assert stages_ran(output) == []
    # compute re-resolves this host on every repro and writes the same file: nothing follows.
    assert all(f"Stage '{stage}' didn't change, skipping" in output for stage in STAGES)
    assert run(["git", "status", "--porcelain"], workspace) == ""


@pytest.mark.parametrize(
    "module",
    [
        "mnistflow/params.py",
        "mnistflow/data/normalization.py",
        "mnistflow/release/gates.py",
        # Inside a folder that train lists as a whole.
        "mnistflow/training/models.py",
    ],
)
def test_editing_a_library_module_reruns_exactly_its_importers(reproduced, module):
    workspace, _ = reproduced
    path = workspace / module
    original = path.read_text()
    path.write_text(original + "# an edit that changes no behaviour\n")
    try:
        changed = changed_stage_names(workspace)
    finally:
        path.write_text(original)
    assert changed == stages_importing(workspace, path)
    assert changed_stage_names(workspace) == set()


def test_accepting_a_baseline_reruns_export_only(reproduced):
    workspace, _ = reproduced
    mnistflow = [sys.executable, "-m", "mnistflow", "baseline"]
    params = (workspace / "params.yaml").read_text()
    set_params(workspace, {"evaluate": {"batch_size": 512}})
    try:
        refused = run(mnistflow, workspace, expect_failure=True)
    finally:
        (workspace / "params.yaml").write_text(params)
    assert "the test outcomes are not current (evaluate changed" in refused
    assert "baseline: cnn test accuracy" in run(mnistflow, workspace)
    accepted = json.loads((workspace / "release" / "baseline.json").read_text())
    # The export stage's outcome on the whole raw test split: what later gates pair with.
    outcomes = json.loads((workspace / "reports" / "test_outcomes.json").read_text())
    quality = json.loads((workspace / "reports" / "export.json").read_text())["quality"]
    assert accepted["model_name"] == "cnn" and accepted["accuracy"] == quality["accuracy"]
    assert accepted["misclassified"] == outcomes["misclassified"]
    assert accepted["test_images"] == outcomes["images"] == quality["test_images"]
    # The baseline is a declared input of export, and of nothing else.
    assert changed_stage_names(workspace) == {"export"}
    assert stages_ran(dvc("repro", cwd=workspace)) == ["export"]
    run(["git", "add", "-A"], workspace)
    run(["git", "commit", "-q", "-m", "baseline accepted"], workspace)


def test_bytecode_caches_are_not_code_changes(reproduced):
    """Python writes __pycache__ into the library folders that stages depend on as a whole;
    .dvcignore keeps them out of the deps' hashes, or every run would retrain."""
    workspace, _ = reproduced
    cache = workspace / "mnistflow" / "training" / "__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "models.cpython-311.pyc").write_bytes(b"bytecode")
    assert changed_stage_names(workspace) == set()


def test_independent_runs_agree(reproduced, tmp_path):
    workspace, _ = reproduced
    second = tmp_path / "second"
    run(["git", "clone", "-q", str(workspace), str(second)], tmp_path)
    # Forget the recorded results so the clone really recomputes everything.
    (second / "dvc.lock").unlink()
    output = dvc("repro", cwd=second)
    assert stages_ran(output) == list(STAGES)
    # Every output agrees byte for byte — the model, the ONNX file, the
    # reports — so the recomputed dvc.lock is the committed one.
    assert lock_hashes(second) == lock_hashes(workspace)
    assert (second / "dvc.lock").read_text() == (workspace / "dvc.lock").read_text()
    assert (second / "reports" / "metrics.json").read_text() == (
        workspace / "reports" / "metrics.json"
    ).read_text()


def test_push_then_pull_restores_bytes(reproduced, tmp_path):
    workspace, _ = reproduced
    dvc("push", cwd=workspace)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(workspace), str(clone)], tmp_path)
    # The default remote is a folder beside the repository; point the clone at the same one.
    remote = workspace.parent / "mnistflow-dvc-remote"
    assert remote.is_dir()
    dvc("remote", "modify", "--local", "local", "url", str(remote), cwd=clone)
    dvc("pull", cwd=clone)
    for name in (
        "data/raw/mnist.npz",
        "data/prepared/train.npz",
        "data/prepared/test.npz",
        "models/model.keras",
        "models/model.onnx",
    ):
        assert (clone / name).read_bytes() == (workspace / name).read_bytes(), name
    assert dvc_up_to_date(clone)


def test_experiment_with_another_model_just_works(reproduced):
    workspace, _ = reproduced
    output = dvc("exp", "run", "--temp", "--name", "try-mlp", "-S", "model.name=mlp", cwd=workspace)
    # The model declares its input shape, so prepare re-runs for it; ingest and validate don't.
    assert stages_ran(output) == ["prepare", "train", "evaluate", "export"]
    assert warnings(output) == []
    assert run(["git", "status", "--porcelain"], workspace) == ""
    shown = json.loads(dvc("exp", "show", "--json", cwd=workspace))
    experiments = [
        experiment
        for baseline in shown
        for experiment in (baseline.get("experiments") or [])
        if experiment.get("name") == "try-mlp"
    ]
    assert len(experiments) == 1
    data = experiments[0]["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["model"]["name"] == "mlp"
    live_metrics = data["metrics"]["reports/training/metrics.json"]["data"]
    assert 0.5 < live_metrics["eval"]["accuracy"] <= 1.0
    plots = json.loads(dvc("plots", "diff", "HEAD", "try-mlp", "--json", cwd=workspace))
    assert "Loss per epoch" in json.dumps(plots)


def test_changing_epochs_reruns_train_and_evaluate_only(reproduced):
    workspace, _ = reproduced
    set_params(workspace, {"train": {"epochs": 2}})
    output = dvc("repro", cwd=workspace)
    assert stages_ran(output) == ["train", "evaluate", "export"]
    assert len(epoch_rows(workspace, "train/loss")) == 2


def test_killed_training_resumes_on_the_next_repro(reproduced):
    import signal
    import time

    workspace, _ = reproduced
    set_params(workspace, {"train": {"epochs": 4}})
    checkpoints = workspace / ".checkpoints" / "train"
    repro = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro"],
        cwd=workspace,
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 600
        while not snapshots(checkpoints) and repro.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        # Kill DVC and the stage it runs, as a crash or an OOM kill would.
        os.killpg(repro.pid, signal.SIGKILL)
        repro.wait()
    epochs_done = json.loads((snapshots(checkpoints)[0] / "state.json").read_text())["epochs_done"]
    assert 1 <= epochs_done < 4
    assert not (workspace / "models" / "model.keras").exists()

    output = dvc("repro", cwd=workspace)
    assert f"resuming from the checkpoint in .checkpoints/train after epoch {epochs_done} of 4" in (
        output
    )
    assert stages_ran(output) == ["train", "evaluate", "export"]
    assert not checkpoints.exists()
    assert len(epoch_rows(workspace, "eval/accuracy")) == 4
    summary = json.loads((workspace / "reports" / "train.json").read_text())
    assert summary["resumed_from_epoch"] == epochs_done and summary["epochs_run"] == 4
    assert dvc_up_to_date(workspace)


def test_bad_data_stops_at_validate_and_keeps_downstream(reproduced, tmp_path):
    workspace, _ = reproduced
    with np.load(workspace / "data" / "raw" / "mnist.npz") as raw:
        arrays = {key: raw[key] for key in raw.files}
    arrays["x_train"][:100] = 255 - arrays["x_train"][:100]  # inverted images
    corrupted = tmp_path / "inverted.npz"
    np.savez(corrupted, **arrays)
    downstream = [
        "data/prepared/train.npz",
        "data/prepared/test.npz",
        "models/model.keras",
        "models/model.onnx",
        "reports/metrics.json",
    ]
    before = {name: (workspace / name).read_bytes() for name in downstream}
    set_params(workspace, {"data": {"source": str(corrupted)}})
    output = dvc("repro", cwd=workspace, expect_failure=True)
    assert stages_ran(output) == ["ingest", "validate"]
    assert "mean_intensity [train_images.mean_intensity]" in output
    assert "100 unexpected" in output
    for name, content in before.items():
        assert (workspace / name).read_bytes() == content, f"{name} was overwritten"


def _transposed(arrays):
    arrays["x_train"] = np.ascontiguousarray(arrays["x_train"].transpose(0, 2, 1))


def _five_percent_label_noise(arrays):
    rng = np.random.default_rng(0)
    labels = arrays["y_train"]
    chosen = rng.choice(len(labels), len(labels) // 20, replace=False)
    labels[chosen] = (labels[chosen] + rng.integers(1, 10, len(chosen))) % 10


@pytest.mark.parametrize(
    ("corrupt", "named"),
    [
        (_transposed, "drift_aspect_js [drift]"),
        (_five_percent_label_noise, "label_error_rate [train_labels]"),
    ],
    ids=["transposed", "label-noise"],
)
def test_data_that_means_something_else_stops_at_validate(reproduced, tmp_path, corrupt, named):
    """Against the project's reference (full MNIST): each failure names its check, and nothing
    after validate is touched."""
    workspace, _ = reproduced
    with np.load(workspace / "data" / "raw" / "mnist.npz") as raw:
        arrays = {key: raw[key] for key in raw.files}
    corrupt(arrays)
    corrupted = tmp_path / "corrupted.npz"
    np.savez(corrupted, **arrays)
    downstream = ["data/prepared/train.npz", "models/model.keras", "models/model.onnx"]
    before = {name: (workspace / name).read_bytes() for name in downstream}
    set_params(workspace, {"data": {"source": str(corrupted)}})
    output = dvc("repro", cwd=workspace, expect_failure=True)
    assert stages_ran(output) == ["ingest", "validate"]
    assert named in output
    for name, content in before.items():
        assert (workspace / name).read_bytes() == content, f"{name} was overwritten"
    # prepare, run by hand on this data, refuses: the report failed.
    prepare = yaml.safe_load((workspace / "dvc.yaml").read_text())["stages"]["prepare"]["cmd"]
    refused = run(shlex.split(prepare.replace("python", sys.executable, 1)), workspace,
                  expect_failure=True)  # fmt: skip
    assert "failed validation; not preparing it" in refused


def test_another_dataset_is_accepted_with_one_command(reproduced):
    """Fashion-MNIST (a real slice, tests/data) stops at validate with the way forward; one
    `mnistflow reference accept`, and `dvc repro` trains on it end to end."""
    workspace, _ = reproduced
    # The sizes back to the reference's (params.yaml's null), as the shipped params have them.
    sizes = {"train_size": None, "test_size": None}
    everything = {"max_train_images": None, "max_test_images": None}  # the slice's 2,000/500
    set_params(
        workspace,
        {
            "data": {"source": "tests/data/fashion_mnist_slice.npz"},
            "validate": sizes,
            "prepare": everything,
        },
    )
    output = dvc("repro", cwd=workspace, expect_failure=True)
    assert stages_ran(output) == ["ingest", "validate"]
    assert "drift_mean_image [drift]" in output
    assert "accept it as the new reference with `mnistflow reference accept`" in output

    accepted = run([sys.executable, "-m", "mnistflow", "reference", "accept"], workspace)
    # The served model was trained on MNIST, not on this data: cross-validated MLPs judge labels.
    assert "label model: cross-validated MLPs" in accepted
    lock = yaml.safe_load((workspace / "dvc.lock").read_text())
    raw_md5 = lock["stages"]["ingest"]["outs"][0]["md5"]
    meta = yaml.safe_load((workspace / "reference.dvc").read_text())["meta"]
    assert meta["data_md5"] == raw_md5

    output = dvc("repro", cwd=workspace)
    assert stages_ran(output) == ["validate", "prepare", "train", "evaluate", "export"]
    validation = json.loads((workspace / "reports" / "validation.json").read_text())
    assert validation["success"] is True and validation["data"]["md5"] == raw_md5
    assert validation["reference"]["data_md5"] == raw_md5
    assert max(validation["drift"].values()) < 1e-6
    metrics = json.loads((workspace / "reports" / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.6  # one epoch on 1,800 clothes images
    assert dvc_up_to_date(workspace)
