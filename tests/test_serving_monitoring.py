"""Serving you can watch: each inbox run's statistics beside the test set's, across runs."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from flows.batch_predict import batch_predict
from mnistflow.constants import INPUT_NAME
from mnistflow.errors import PipelineInputError
from mnistflow.params import ServingParams
from mnistflow.release.outcomes import outcomes_of, prediction_profile
from mnistflow.reporting.page import make_report
from mnistflow.serving.monitoring import (
    RunStatistics,
    compared_with_test_set,
    parse_run_statistics,
    read_run_statistics,
    total_variation,
)
from tests.test_flows_batch_predict import add_digits
from tests.test_pipeline_end_to_end import copy_project


def run_statistics(**changes) -> RunStatistics:
    figures = {
        "partition": "part-1.parquet", "predicted_at": "2026-12-06T10:00:00+00:00",
        "model_version": "v1", "model_sha256": "a" * 64, "images": 500,
        "class_shares": [0.1] * 10, "confidence_mean": 0.97, "confidence_low": 0.8,
        "flagged": 0, "drifting": 0, "quarantined": 0,
    }  # fmt: skip
    return RunStatistics(**{**figures, **changes})


def test_a_run_is_judged_against_the_test_set_only_when_large_enough():
    test_set = prediction_profile(np.eye(10, dtype=np.float32)[np.arange(1000) % 10])
    assert total_variation([0.1] * 10, test_set.class_shares) == pytest.approx(0)
    params = ServingParams(max_class_shift=0.2, max_confidence_drop=0.05, min_images=100)
    steady = compared_with_test_set(run_statistics(), test_set, params)
    assert steady.alerts == [] and steady.confidence_drop == pytest.approx(0.03)
    # Everything predicted as one class: 0.9 of predictions would have to change class.
    collapsed = run_statistics(class_shares=[1.0] + [0.0] * 9, confidence_mean=0.6)
    moved = compared_with_test_set(collapsed, test_set, params)
    assert moved.class_shift == pytest.approx(0.9)
    assert len(moved.alerts) == 2 and "serving.max_class_shift 0.2" in moved.alerts[0]
    assert "serving.max_confidence_drop 0.05" in moved.alerts[1]
    # The same figures on 20 images are shown, not judged.
    few = compared_with_test_set(run_statistics(**{**collapsed.as_json(), "images": 20}),
                                 test_set, params)  # fmt: skip
    assert few.class_shift == pytest.approx(0.9) and few.alerts == []
    # Without the model's test-set predictions there is nothing to compare with.
    assert compared_with_test_set(collapsed, None, params).class_shift is None


def test_planted_statistics_files_are_refused_by_name(tmp_path):
    folder = tmp_path / "statistics"
    folder.mkdir()
    (folder / "good.json").write_text(json.dumps(run_statistics().as_json()))
    (folder / "garbage.json").write_text("{not json")
    (folder / "shares.json").write_text(
        json.dumps({**run_statistics().as_json(), "class_shares": [2.0] * 10})
    )
    (folder / "huge.json").write_text(" " * 70_000)
    (folder / "link.json").symlink_to(folder / "good.json")
    runs, refused = read_run_statistics(tmp_path)
    assert [run.partition for run in runs] == ["part-1.parquet"]
    assert len(refused) == 4
    assert any("garbage.json: not JSON" in reason for reason in refused)
    assert any("shares.json: class_shares 2.0; expected a number in 0..1" in r for r in refused)
    assert any("huge.json: larger than" in reason for reason in refused)
    assert any("link.json: not a plain file" in reason for reason in refused)
    with pytest.raises(PipelineInputError, match="x: model_version: expected a text"):
        parse_run_statistics(json.dumps({**run_statistics().as_json(), "model_version": 3}), "x")


@pytest.fixture
def served_project(tmp_path, small_onnx_model, mnist) -> Path:
    """A project whose released export recorded its test outcomes, and an empty inbox."""
    root = copy_project(tmp_path / "project")
    (root / "models").mkdir(exist_ok=True)
    shutil.copyfile(small_onnx_model, root / "models" / "model.onnx")
    model_bytes = (root / "models" / "model.onnx").read_bytes()
    test_images, test_labels = mnist.x_test[1000:3000], mnist.y_test[1000:3000]
    probabilities = onnxruntime.InferenceSession(model_bytes).run(None, {INPUT_NAME: test_images})[
        0
    ]
    (root / "reports").mkdir()
    outcomes = outcomes_of(probabilities, test_images, test_labels)
    (root / "reports" / "test_outcomes.json").write_text(json.dumps(outcomes.as_json()))
    (root / "reports" / "export.json").write_text(json.dumps(
        {"released": True, "verdict": "released",
         "onnx_sha256": hashlib.sha256(model_bytes).hexdigest()}
    ))  # fmt: skip
    (root / "data" / "inbox").mkdir(parents=True)
    return root


def test_three_inbox_runs_the_third_inverted_is_flagged(prefect_harness, served_project, mnist):
    from prefect.client.orchestration import get_client

    inbox = served_project / "data" / "inbox"
    summaries = []
    for run, images in enumerate((mnist.x_test[:300], mnist.x_test[300:600])):
        add_digits(inbox, images, run * 1000)
        summaries.append(batch_predict(root=str(served_project))["serving"])
    # Arrays are taken as they are (a picture with a light background is inverted on reading).
    np.save(inbox / "inverted.npy", 255 - mnist.x_test[600:900])
    summaries.append(batch_predict(root=str(served_project))["serving"])
    first, second, third = summaries
    for steady in (first, second):
        assert steady["images"] == 300 and steady["alerts"] == []
        assert steady["class_shift"] < 0.2
    assert third["class_shift"] > 0.2 and third["flagged"] > 0
    assert any("serving.max_class_shift" in alert for alert in third["alerts"])
    # Each run wrote its figures beside its predictions.
    runs, refused = read_run_statistics(served_project / "predictions" / "inbox")
    assert [run.as_json() for run in runs] == summaries and refused == []

    # One Prefect artifact per run, the third saying it was flagged.
    async def artifacts():
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["inbox-serving"]))
            )

    import asyncio

    found = [a for a in asyncio.run(artifacts()) if third["partition"] in (a.data or "")]
    assert found and "**Flagged**: predicted classes moved" in found[0].data

    path, inputs = make_report(served_project)
    html = Path(path).read_text(encoding="utf-8")
    section = html[html.index('<section id="serving">') : html.index('<section id="environment">')]
    shown = re.findall(r'data-run="(part-[^"]+)"', section)
    assert shown == [run["partition"] for run in summaries]
    assert 'data-run="test-set"' in section
    assert re.findall(r'data-run="([^"]+)" class="bad" data-flagged', section) == [
        third["partition"]
    ]
    assert inputs.serving["test_set"]["images"] == 2000


def test_broken_watching_never_stops_serving(prefect_harness, served_project, mnist, tmp_path):
    """A test-set record that cannot be read, then a planted link where the statistics go:
    each run still delivers its predictions, says why it is unwatched, and writes nothing
    through the link."""
    inbox, output = served_project / "data" / "inbox", served_project / "predictions" / "inbox"
    (served_project / "reports" / "test_outcomes.json").write_text('{"images": 10}')
    add_digits(inbox, mnist.x_test[:120], 0)
    unreferenced = batch_predict(root=str(served_project))
    assert unreferenced["images"] == 120
    assert unreferenced["serving"]["class_shift"] is None
    assert unreferenced["serving"]["alerts"] == []
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(output / "statistics")
    (output / "statistics").symlink_to(elsewhere)
    add_digits(inbox, mnist.x_test[120:240], 1000)
    linked = batch_predict(root=str(served_project))
    assert linked["images"] == 120 and linked["serving"] is None
    assert list(elsewhere.iterdir()) == []
    assert (output / linked["partition"]).is_file()
