"""Every run recorded and restorable, a model registry, gates that decide release — for real.

A throwaway project with a bare git remote and a local DVC remote. The Prefect flow runs four
times (a source change before the second, a params change before the third, nothing before
the fourth); each record is restored byte for byte in a fresh clone through the remotes; a
released version is promoted and fetched with `dvc artifacts get`; a failing experiment is
recorded with its verdict without touching the served model.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from mnistflow.cli import app
from mnistflow.data.sources import MnistArrays
from mnistflow.release.lineage import lineage_metadata
from mnistflow.release.registry import ARTIFACT
from tests.test_pipeline_end_to_end import GIT_IDENTITY, copy_project, dvc, run, set_params

LINEAGE_KEYS = set(lineage_metadata("a", "v", "r", "c", [], "{}"))
# What a record must restore exactly (DVC-cached outputs and git-tracked results).
RESTORED = (
    "data/raw/mnist.npz",
    "models/model.keras",
    "models/model.onnx",
    "reports/metrics.json",
    "reports/export.json",
    "dvc.lock",
)


def onnx_metadata(path: Path) -> dict[str, str]:
    import onnx

    return {entry.key: entry.value for entry in onnx.load(str(path)).metadata_props}


def without_lineage(model_bytes: bytes) -> bytes:
    import onnx

    model = onnx.load_from_string(model_bytes)
    kept = [e for e in model.metadata_props if e.key not in LINEAGE_KEYS]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    return model.SerializeToString()


def digests(root: Path) -> dict[str, str]:
    return {name: hashlib.sha256((root / name).read_bytes()).hexdigest() for name in RESTORED}


def save_source(path: Path, arrays: MnistArrays, extra: MnistArrays | None = None) -> None:
    """Write `arrays` as a Keras-style source; `extra` adds its training images (new digits:
    shifted copies of old ones would be near-duplicates, which validate rightly refuses)."""
    x_train, y_train = arrays.x_train, arrays.y_train
    if extra is not None:
        x_train = np.concatenate([x_train, extra.x_train])
        y_train = np.concatenate([y_train, extra.y_train])
    np.savez(path, x_train=x_train, y_train=y_train, x_test=arrays.x_test, y_test=arrays.y_test)


@pytest.fixture(scope="module")
def remotes_project(tmp_path_factory, mnist):
    base = tmp_path_factory.mktemp("records")
    small = MnistArrays(mnist.x_train[:1500], mnist.y_train[:1500], mnist.x_test[:500],
                        mnist.y_test[:500])  # fmt: skip
    more = MnistArrays(mnist.x_train[1500:1800], mnist.y_train[1500:1800], mnist.x_test[:0],
                       mnist.y_test[:0])  # fmt: skip
    source = base / "digits.npz"
    save_source(source, small)
    workspace = copy_project(base / "project")
    set_params(
        workspace,
        {
            "data": {"source": str(source)},
            "validate": {"train_size": 1500, "test_size": 500},
            "prepare": {"max_train_images": None, "max_test_images": None},
        },
    )
    run(["git", "init", "-q", "--bare", "-b", "main", str(base / "remote.git")], base)
    run(["git", "remote", "add", "origin", str(base / "remote.git")], workspace)
    dvc("remote", "add", "-d", "storage", str(base / "dvc-remote"), cwd=workspace)
    run(["git", "add", "-A"], workspace)
    run(["git", "commit", "-q", "-m", "remotes"], workspace)
    run(["git", "push", "-q", "origin", "main"], workspace)
    # The team's publishing machine: this clone pushes records and registers versions.
    run(["git", "config", "mnistflow.publish", "true"], workspace)
    return {"base": base, "workspace": workspace, "source": source, "small": small, "more": more}


def dvc_stdout(cwd: Path, *arguments: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "dvc", *arguments],
        cwd=cwd, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def clone(project: dict, name: str) -> Path:
    target = project["base"] / name
    run(["git", "clone", "-q", str(project["base"] / "remote.git"), str(target)], project["base"])
    return target


def test_four_runs_three_records_each_restorable(prefect_harness, remotes_project, monkeypatch):
    from flows.pipeline import training_pipeline

    for key, value in GIT_IDENTITY.items():
        monkeypatch.setenv(key, value)
    workspace = remotes_project["workspace"]
    runs = []

    def pipeline_run() -> dict:
        state = training_pipeline(root=str(workspace), return_state=True)
        assert state.is_completed(), state.message
        result = state.result()
        runs.append((result["record"], digests(workspace)))
        return result

    first = pipeline_run()
    # The report's baseline is never the run itself, though the run registered v0.0.1.
    assert first["record"]["version"] == "v0.0.1"
    assert "v0.0.1" not in (first["summary"]["baseline"] or "")
    # New data at the same place, 300 more training images: DVC sees the source's content.
    save_source(remotes_project["source"], remotes_project["small"], remotes_project["more"])
    status = dvc("status", cwd=workspace)
    assert "ingest" in status and "modified" in status and str(remotes_project["source"]) in status
    pipeline_run()
    # A dataset that grew is a new version, not a validation failure: it passed and trained.
    validation = json.loads((workspace / "reports" / "validation.json").read_text())
    sizes = {
        e["table"]: e["observed"] for e in validation["expectations"] if e["name"] == "split_size"
    }
    assert validation["success"] and sizes == {"train_images": 1800, "test_images": 500}
    set_params(workspace, {"train": {"batch_size": 64}})  # new params
    third = pipeline_run()
    # Compared with the newest version other than its own.
    assert third["record"]["version"] == "v0.2.0"
    assert third["summary"]["baseline"] == f"{ARTIFACT} v0.1.0 (latest other version)"
    fourth = pipeline_run()  # nothing changed
    assert fourth["record"] is None
    records = [record for record, _ in runs if record]
    assert len(records) == 3
    assert [record["version"] for record in records] == ["v0.0.1", "v0.1.0", "v0.2.0"]
    remote_refs = run(["git", "ls-remote", str(remotes_project["base"] / "remote.git")], workspace)
    for record in records:
        assert record["revision"] in remote_refs
        assert any("DVC remote storage" in place for place in record["pushed_to"])

    # Each record, in a fresh clone, through the remotes only: the same bytes.
    restored = clone(remotes_project, "restore")
    for record, expected in runs[:3]:
        dvc("exp", "pull", "origin", record["experiment"], cwd=restored)
        dvc("exp", "apply", record["experiment"], cwd=restored)
        dvc("pull", cwd=restored)
        assert digests(restored) == expected, record["experiment"]
        # The record holds the registered, stamped model too; the workspace does not.
        stamped = onnx_metadata(restored / "release" / "model.onnx")
        assert stamped["model_version"] == record["version"]
        assert stamped["record"] == record["experiment"]
    assert not (workspace / "release" / "model.onnx.dvc").exists()
    shown = dvc("exp", "show", "--json", cwd=workspace)
    assert all(record["experiment"] in shown for record in records)
    assert '"released": true' in shown
    # Records compare like any revisions: metrics and plots, DVC's own commands.
    first, third = records[0]["experiment"], records[2]["experiment"]
    metrics_diff = json.loads(dvc_stdout(workspace, "metrics", "diff", first, third, "--json"))
    assert "reports/metrics.json" in metrics_diff
    plots_diff = json.loads(dvc_stdout(workspace, "plots", "diff", first, third, "--json"))
    assert "Loss per epoch" in json.dumps(plots_diff)

    # The git remote is down: the run fails after recording locally ...
    remote = str(remotes_project["base"] / "remote.git")
    run(["git", "remote", "set-url", "origin", str(remotes_project["base"] / "down.git")],
        workspace)  # fmt: skip
    set_params(workspace, {"evaluate": {"batch_size": 512}})
    state = training_pipeline(root=str(workspace), return_state=True)
    assert state.is_failed()
    # ... and the next run, with nothing new to compute, pushes that record.
    run(["git", "remote", "set-url", "origin", remote], workspace)
    retried = pipeline_run()["record"]
    assert retried is not None and retried["new"] is False and retried["pushed_to"]
    assert retried["revision"] in run(["git", "ls-remote", remote], workspace)
    assert pipeline_run()["record"] is None


def test_promoted_version_is_fetched_and_served_by_name(
    prefect_harness, remotes_project, monkeypatch, tmp_path
):
    for key, value in GIT_IDENTITY.items():
        monkeypatch.setenv(key, value)
    workspace = remotes_project["workspace"]
    monkeypatch.chdir(workspace)
    cli = CliRunner()
    # Stages go dev -> staging -> prod (.gto): prod for a version never in staging is refused.
    refused = cli.invoke(app, ["promote", "v0.1.0", "--stage", "prod"])
    assert refused.exit_code != 0
    assert "v0.1.0 was never in staging" in refused.output and "--force REASON" in refused.output
    assert "mnist-classifier#prod" not in run(["git", "tag"], workspace)
    # Skipping on purpose is allowed, and the reason is kept in the assignment's tag.
    result = cli.invoke(
        app, ["promote", "v0.1.0", "--stage", "prod", "--force", "staging cluster down"]
    )
    assert result.exit_code == 0, result.output
    baseline = json.loads((workspace / "release" / "baseline.json").read_text())
    assert baseline["source"] == "mnist-classifier v0.1.0" and baseline["model_name"] == "cnn"
    # The baseline holds the version's misclassified test images: later gates are paired.
    recorded = json.loads(run(["git", "show", "mnist-classifier@v0.1.0:reports/test_outcomes.json"],
                              workspace))  # fmt: skip
    assert baseline["misclassified"] == recorded["misclassified"]
    assert baseline["test_set_sha256"] == recorded["test_set_sha256"]
    # The ordinary way, one stage at a time.
    for stage in ("dev", "staging"):
        step = cli.invoke(app, ["promote", "v0.2.0", "--stage", stage])
        assert step.exit_code == 0, step.output
    assert cli.invoke(app, ["promote", "v0.2.0", "--stage", "nightly"]).exit_code != 0
    listing = cli.invoke(app, ["registry"])
    assert listing.exit_code == 0, listing.output
    lines = listing.output.splitlines()
    assert all(len(line) <= 100 for line in lines)
    rows = {line.split()[0]: line for line in lines if line.startswith("v0.")}
    assert set(rows) == {"v0.0.1", "v0.1.0", "v0.2.0"}
    assert " prod! " in rows["v0.1.0"]
    assert {"staging", "dev"} <= set(rows["v0.2.0"].split()[1].split(","))
    for row in rows.values():  # accuracy with its interval, and the verdict
        assert re.search(r" 0\.\d{4} \[0\.\d{4},[01]\.\d{4}\] ", row), row
        assert row.rstrip().endswith("released")
    moves = [line for line in lines if " -> " in line]
    assert len(moves) == 3 and "forced: skipped staging: staging cluster down" in moves[-1]
    assert re.search(r"test set [0-9a-f]{12}: \d+ release decision", listing.output)

    other = clone(remotes_project, "consumer")
    dvc("artifacts", "get", ".", "mnist-classifier", "--stage", "prod", "-o", "prod.onnx",
        cwd=other)  # fmt: skip
    tracked = run(["git", "show", "mnist-classifier@v0.1.0:release/model.onnx.dvc"], other)
    served = (other / "prod.onnx").read_bytes()
    assert hashlib.md5(served).hexdigest() in tracked  # the bytes the version recorded
    # The model names its version, record, code revision and data; the graph is the export
    # stage's own model (stamping only added metadata).
    lock = yaml.safe_load(run(["git", "show", "mnist-classifier@v0.1.0:dvc.lock"], other))
    stamped = onnx_metadata(other / "prod.onnx")
    assert stamped["model_version"] == "v0.1.0" and stamped["registry_artifact"] == ARTIFACT
    parent = run(["git", "rev-parse", "mnist-classifier@v0.1.0^"], other).strip()
    assert stamped["code_revision"] == parent and json.loads(stamped["code_changes"]) == []
    raw = next(o for o in lock["stages"]["ingest"]["outs"] if o["path"] == "data/raw/mnist.npz")
    assert json.loads(stamped["data_versions"])["data/raw/mnist.npz"] == raw["md5"]
    outs = lock["stages"]["export"]["outs"]
    exported = next(o for o in outs if o["path"] == "models/model.onnx")["md5"]
    assert hashlib.md5(without_lineage(served)).hexdigest() == exported

    np.save(tmp_path / "digits.npy", remotes_project["small"].x_test[:20])
    monkeypatch.chdir(other)
    result = CliRunner().invoke(
        app,
        ["predict", str(tmp_path / "digits.npy"), "-o", str(tmp_path / "out.csv"),
         "--model", "mnist-classifier:prod", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "out.csv").read_text().splitlines()
    assert len(rows) == 21 and all(",v0.1.0," in row for row in rows[1:])
    assert all(hashlib.sha256(served).hexdigest() in row for row in rows[1:])


def test_a_refused_experiment_is_recorded_and_releases_nothing(remotes_project, monkeypatch):
    for key, value in GIT_IDENTITY.items():
        monkeypatch.setenv(key, value)
    workspace = remotes_project["workspace"]
    from mnistflow.constants import REFUSED_KEY
    from mnistflow.release.registry import served_model

    set_params(workspace, {"export": {"min_accuracy": {"mlp": 0.999}}})
    output = dvc("exp", "run", "-S", "model.name=mlp", "-S", "train.epochs=1", cwd=workspace)
    assert "not released" in output
    report = json.loads((workspace / "reports" / "export.json").read_text())
    assert report["released"] is False and "export.min_accuracy.mlp" in report["verdict"]
    # The workspace holds this run's candidate, marked refused (export is a pure function of
    # its inputs); what is served stays the registry's decision: the prod version.
    assert REFUSED_KEY in onnx_metadata(workspace / "models" / "model.onnx")
    assert served_model(workspace) == "mnist-classifier:prod"
    shown = json.loads(
        subprocess.run(
            [sys.executable, "-m", "dvc", "exp", "show", "--json"],
            cwd=workspace, capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    text = json.dumps(shown)
    assert '"released": false' in text and '"mlp"' in text
    prod = run(["git", "tag", "--list", "mnist-classifier#prod#*"], workspace).split()
    assert prod == ["mnist-classifier#prod#1"]
    versions = run(["git", "tag", "--list", "mnist-classifier@*"], workspace).split()
    assert versions == [
        "mnist-classifier@v0.0.1",
        "mnist-classifier@v0.1.0",
        "mnist-classifier@v0.2.0",
    ]


def test_the_inbox_flow_serves_the_prod_model_by_name(prefect_harness, remotes_project):
    import pyarrow.parquet as pq
    from PIL import Image

    from flows.batch_predict import batch_predict

    workspace = remotes_project["workspace"]
    inbox = workspace / "data" / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    for index, digit in enumerate(remotes_project["small"].x_test[:8]):
        Image.fromarray(digit).save(inbox / f"digit-{index}.png")
    summary = batch_predict(root=str(workspace), model="mnist-classifier:prod", shards=2)
    rows = pq.read_table(workspace / "predictions" / "inbox" / summary["partition"]).to_pydict()
    assert len(rows["file"]) == 8 and set(rows["model_version"]) == {"v0.1.0"}
