"""The training pipeline as a Prefect flow: one task per DVC stage, in dvc.yaml's order.

Each task asks DVC to reproduce exactly its stage, so a Prefect run and `dvc repro` share
one cache and one dvc.lock, and an unchanged stage is skipped either way. The stage list
is read from dvc.yaml, never written down here.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.states import Completed

from mnistflow.orchestration import dvc_runs
from mnistflow.orchestration.deployment_requests import checked_deployment_request
from mnistflow.orchestration.project import (
    always_changed_stages,
    find_project_root,
    stage_names,
    stage_upstreams,
)
from mnistflow.orchestration.writer_lock import (
    DEFAULT_WAIT_SECONDS,
    describe_holder,
    exclusive_writer,
)
from mnistflow.params import load_params
from mnistflow.paths import PARAMS
from mnistflow.release import records, registry
from mnistflow.release.publishing import publishing
from mnistflow.reporting.summary import record_line


class DownloadFailed(RuntimeError):
    """Ingest failed while its source is a URL: a network error may pass on a second try."""


def _downloads(root: str) -> bool:
    """Whether the workspace's ingest downloads its source (params it cannot read: no)."""
    from mnistflow.data.sources import is_url  # numpy and more: only once a stage failed

    try:
        return is_url(load_params(Path(root) / PARAMS).data.source)
    except Exception:  # noqa: BLE001 - unreadable params fail the stage, with its own message
        return False


def _retry_when_transient(task, task_run, state) -> bool:
    """Retry only what may pass on a second try: DVC's workspace lock, or ingest's download.
    A local source that is not what it should be fails at once (three tries over 42 s could
    only fail again)."""
    try:
        state.result()
    except Exception as error:  # noqa: BLE001 - classify whatever the stage raised
        return dvc_runs.is_lock_error(error) or isinstance(error, DownloadFailed)
    return False


@task(
    task_run_name="{stage}",
    retries=3,
    retry_delay_seconds=[2, 10, 30],
    retry_condition_fn=_retry_when_transient,
)
def reproduce_stage(stage: str, root: str, known_current: bool = False):
    """`dvc repro --single-item <stage>`; the state is named "Ran" or "Up to date".
    `known_current`: DVC's status, taken for this run after every stage before it, calls
    the stage current, and reproducing it would only find that out again."""
    logger = get_run_logger()
    started = time.perf_counter()
    try:
        ran = False if known_current else dvc_runs.reproduce_stage(root, stage)
    except Exception as error:
        cause = f" ({error.__cause__})" if error.__cause__ else ""
        logger.error("stage %s failed: %s%s", stage, error, cause)
        if stage == "ingest" and _downloads(root):
            raise DownloadFailed(str(error)) from error
        raise
    result = {"stage": stage, "ran": bool(ran), "seconds": round(time.perf_counter() - started, 2)}
    name = "Ran" if ran else "Up to date"
    logger.info("stage %s: %s in %.1f s", stage, name.lower(), result["seconds"])
    return Completed(name=name, message=f"{stage}: {name}", data=result)


@task(task_run_name="dvc-experiment")
def run_experiment(overrides: dict[str, Any], root: str, name: str | None = None) -> dict[str, Any]:
    """`dvc exp run --temp --set-param ...`: the workspace's committed results stay as they are."""
    logger = get_run_logger()
    started = time.perf_counter()
    result = dvc_runs.run_experiment(root, overrides, name)
    result["seconds"] = round(time.perf_counter() - started, 2)
    logger.info(
        "experiment %s (%s) with %s", result["experiment"], result["revision"], result["params"]
    )
    return result


@task(task_run_name="report")
def report_task(root: str, stages: list[dict[str, Any]]) -> dict[str, Any]:
    """reports/report.html, the offline report of this run against the baseline."""
    from mnistflow.reporting.page import refresh_report
    from mnistflow.reporting.summary import unavailable_summary

    logger = get_run_logger()
    try:
        path, summary, rebuilt = refresh_report(Path(root), stages)
    except Exception:  # noqa: BLE001 - the run is done and recorded; the report is a view
        logger.exception("the report could not be written")
        return unavailable_summary()
    logger.info("report: %s%s", path, "" if rebuilt else " (unchanged: built from the same inputs)")
    return summary


def publish_artifacts(
    stages: list[dict[str, Any]], summary: dict[str, Any], record: dict[str, Any] | None = None
) -> None:
    """The run's outcome in the Prefect UI: a metrics table and a markdown summary."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    create_table_artifact(
        key="test-metrics",
        table=summary["metrics"],
        description=f"Test metrics vs {summary['baseline'] or 'no baseline'}",
    )
    lines = [
        "# mnistflow training pipeline",
        "",
        "| stage | result | seconds |",
        "|---|---|---|",
        *(
            f"| {s['stage']} | {'ran' if s['ran'] else 'up to date'} | {s['seconds']} |"
            for s in stages
        ),
        "",
        f"**Validation**: {summary['validation']}",
        "",
        "**Test metrics**: "
        + ", ".join(
            f"{row['metric']} {row['value']:.4f}"
            for row in summary["metrics"]
            if row["value"] is not None
        ),
        "",
        f"**Test accuracy**: {summary['accuracy']}",
        "",
        f"**Release**: {summary['verdict']}",
        "",
        f"**Record**: {record_line(record)}",
        "",
        f"**Report** (self-contained, opens offline): `{summary['report']}`",
    ]
    create_markdown_artifact(key="pipeline-summary", markdown="\n".join(lines))


@flow(name="training-pipeline")
def training_pipeline(
    overrides: dict[str, Any] | None = None,
    root: str | None = None,
    experiment_name: str | None = None,
    wait_seconds: float = DEFAULT_WAIT_SECONDS,
    publish: bool | None = None,
) -> dict[str, Any]:
    """Reproduce the DVC pipeline stage by stage, or as a DVC experiment when overridden.

    `root` defaults to the project around the working directory (or $MNISTFLOW_ROOT). One run
    writes to a workspace at a time: another waits up to `wait_seconds` for it, then fails
    naming it. A killed run releases the workspace at once, and its processes are stopped.
    The run is recorded locally; it is pushed and its model registered only when `publish`
    (None: as the clone is set, mnistflow/release/publishing.py). This flow trusts its caller (the
    CLI); deployments run `nightly`, which checks what an API caller may ask.
    """
    # DVC prints its own messages; stop them reaching Prefect's handlers a second time.
    logging.getLogger("dvc").propagate = False
    logger = get_run_logger()
    root = str(find_project_root(Path(root) if root else None))
    publish = publishing(Path(root), publish)
    with exclusive_writer(Path(root), wait_seconds, report=logger.warning) as previous:
        if previous:
            logger.warning("the previous run (%s) did not finish", describe_holder(previous))
        if overrides:
            experiment = run_experiment(overrides, root, experiment_name)
            experiment["pushed_to"] = []
            if experiment["experiment"] and publish:
                experiment["pushed_to"] = list(
                    records.push_experiment(
                        Path(root), experiment["experiment"], experiment["revision"]
                    )
                )
            return {"experiment": experiment}
        stages = []
        upstreams = stage_upstreams(Path(root))
        always_changed = always_changed_stages(Path(root))
        states: dict[str, Any] = {}
        # What DVC's status calls current, asked once, when the first stage that is not
        # always-changed comes (compute runs first: what it writes decides what follows);
        # once any stage ran after that, every later stage is reproduced, since its inputs
        # may have changed.
        current: set[str] | None = None
        for stage in stage_names(Path(root)):
            if current is None and stage not in always_changed:
                current = dvc_runs.current_stages(root)
            known_current = current is not None and stage in current
            # wait_for draws dvc.yaml's DAG in Prefect's graph (the stages run in its order).
            waits = [states[name] for name in upstreams[stage]]
            states[stage] = reproduce_stage(
                stage, root, known_current, wait_for=waits, return_state=True
            )
            # The task's state names the outcome; .result() re-raises a failure, ending the run.
            stages.append(states[stage].result())
            if stages[-1]["ran"] and current is not None:
                current = set()
        record = record_and_register(root, publish)
        summary = report_task(root, stages)
    publish_artifacts(stages, summary, record)
    ran = [s["stage"] for s in stages if s["ran"]]
    logger.info(
        "ran %s; up to date: %s", ran or "nothing", [s["stage"] for s in stages if not s["ran"]]
    )
    return {"stages": stages, "record": record, "summary": summary}


@flow(name="nightly-pipeline")
def nightly(
    overrides: dict[str, Any] | None = None,
    experiment_name: str | None = None,
) -> dict[str, Any]:
    """The deployed pipeline: what anyone who can reach the Prefect API may start.

    Its parameters are an untrusted request (mnistflow/orchestration/deployment_requests.py): only a
    few training keys within bounds, never the data, hashes, paths, kernels or code. It runs in the
    worker's project, waits the default time for the workspace, and publishes only where that clone
    is set to (never because a caller asked; a caller's experiment is never published).
    """
    project = find_project_root()
    request = checked_deployment_request(overrides, experiment_name, load_params(project / PARAMS))
    # A caller's experiment stays in the worker's clone: only the scheduled pipeline itself
    # publishes, where the clone is set to.
    return training_pipeline(
        overrides=request.overrides or None,
        root=str(project),
        experiment_name=request.experiment_name,
        publish=False if request.overrides else None,
    )


@task(task_run_name="record-run")
def record_and_register(root: str, publish: bool) -> dict[str, Any] | None:
    """Record the run as a DVC experiment when it changed an output; when publishing, push it
    and register its model when the gates released a new one."""
    logger = get_run_logger()
    name = records.record_name()
    # The stamped model a new version points at is made before the record, which holds it.
    release = None
    if publish and records.has_changes_to_record(Path(root)):
        try:
            release = registry.prepare_release(Path(root), name)
        except Exception:  # noqa: BLE001 - the record matters more than the registration
            logger.exception("the model cannot be prepared for the registry; recording anyway")
    try:
        record = records.record_run(
            Path(root), name, extra=[release] if release else [], publish=publish
        )
    finally:
        if release:
            registry.clear_release(Path(root))
    if record is None:
        logger.info("nothing new to record: dvc.lock matches the baseline commit")
        return None
    # Idempotent: a registration that failed last time (remote down) happens now.
    version = registry.register_release(Path(root), record) if publish else None
    if not record.new and version is None and not record.pushed_to:
        logger.info("nothing new to record: dvc.lock matches %s", record.name)
        return None
    logger.info(
        "recorded %s; %s",
        record.describe(),
        f"registered {registry.ARTIFACT} {version.version}"
        if version
        else "no new model version"
        if publish
        else "not published (this clone does not publish; README: Who publishes)",
    )
    return {
        "experiment": record.name,
        "revision": record.revision,
        "new": record.new,
        "published": publish,
        "pushed_to": list(record.pushed_to),
        "version": version.version if version else None,
    }
