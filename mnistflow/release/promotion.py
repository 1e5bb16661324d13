"""Registry stages in order: a version reaches a stage only from the one before it.

The stages and their order are GTO's own configuration (`.gto`, `stages: [dev, staging,
prod]`), which GTO also enforces as the only names. Promoting to a stage needs the version to
have been assigned the stage before it at some time (GTO keeps every assignment as a tag);
skipping needs a reason (`--force REASON`), which is kept in the assignment's own annotated
tag, so `gto history`, `mnistflow registry` and any clone see who skipped what and why.
Promoting to prod also makes that version's test outcome the quality gate's baseline
(release/baseline.json): the gate compares against what is served.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mnistflow.core.git import file_at_revision
from mnistflow.errors import PipelineInputError
from mnistflow.paths import BASELINE, METRICS, PARAMS, TEST_OUTCOMES
from mnistflow.release.records import git_remote
from mnistflow.release.registry import ARTIFACT, SERVED_STAGE, ModelVersion, version_in_stage

# Where `.gto` names no stages: the usual ladder.
DEFAULT_STAGE_ORDER = ("dev", "staging", SERVED_STAGE)
# The annotated tag message of an assignment that skipped a stage starts with this.
FORCED = "forced"


@dataclass(frozen=True)
class Assignment:
    """One stage assignment as its GTO tag records it."""

    version: str
    stage: str
    author: str
    timestamp: str
    message: str

    @property
    def forced(self) -> bool:
        return self.message.startswith(FORCED)


def stage_order(root: Path) -> tuple[str, ...]:
    """The registry's stages, lowest first: `.gto`'s `stages`, else DEFAULT_STAGE_ORDER."""
    from gto.registry import GitRegistry

    with GitRegistry.from_url(str(root)) as registry:
        configured = registry.config.stages
    return tuple(configured) if configured else DEFAULT_STAGE_ORDER


def assignments(root: Path) -> list[Assignment]:
    """Every stage assignment of the artifact, oldest first."""
    import gto.api
    from gto.exceptions import ArtifactNotFound

    try:
        events = gto.api.history(str(root), ARTIFACT, ascending=True)
    except ArtifactNotFound:
        return []
    return [
        Assignment(
            str(event["version"]),
            str(event["stage"]),
            str(event.get("author") or ""),
            str(event["timestamp"]),
            str(event.get("message") or "").strip(),
        )
        for event in events
        if event["event"] == "assignment"
    ]


def required_stage(order: tuple[str, ...], stage: str) -> str | None:
    """The stage a version must have held before `stage`; None for the first one."""
    if stage not in order:
        raise PipelineInputError(
            f"{stage!r} is not a registry stage; expected one of {', '.join(order)} (.gto)"
        )
    position = order.index(stage)
    return order[position - 1] if position else None


def promote(
    root: Path, version: str, stage: str = SERVED_STAGE, force_reason: str | None = None
) -> ModelVersion:
    """Assign `stage` to `version`, in order unless `force_reason` says why not; for prod,
    its test outcome becomes the quality gate's baseline."""
    import gto.api
    from gto.exceptions import GTOException

    order = stage_order(root)
    before = required_stage(order, stage)
    held = {(entry.version, entry.stage) for entry in assignments(root)}
    skipped = before is not None and (version, before) not in held
    if skipped and not (force_reason or "").strip():
        raise PipelineInputError(
            f"{ARTIFACT} {version} was never in {before}; stages go {' -> '.join(order)}: "
            f"promote it to {before} first, or skip with --force REASON"
        )
    message = (
        f"{FORCED}: skipped {before}: {force_reason.strip()}"
        if skipped
        else f"{ARTIFACT} {version} -> {stage}"
    )
    try:
        gto.api.assign(
            str(root),
            ARTIFACT,
            stage,
            version=version,
            message=message,
            push=git_remote(root) is not None,
        )
    except GTOException as error:
        raise PipelineInputError(f"{ARTIFACT} {version}: cannot assign {stage}: {error}") from None
    promoted = version_in_stage(root, stage)
    if promoted is None or promoted.version != version:
        raise PipelineInputError(f"{ARTIFACT} {version}: {stage} assignment not found after it")
    if stage == SERVED_STAGE:
        write_baseline(root, promoted)
    return promoted


def write_baseline(root: Path, version: ModelVersion) -> None:
    from mnistflow.release.gates import recorded_baseline

    metrics = file_at_revision(root, version.revision, METRICS)
    params = file_at_revision(root, version.revision, PARAMS)
    if metrics is None or params is None:
        raise PipelineInputError(f"{ARTIFACT} {version.version}: no metrics recorded with it")
    # Versions recorded before test outcomes existed give an unpaired baseline.
    outcomes = file_at_revision(root, version.revision, TEST_OUTCOMES)
    baseline = recorded_baseline(metrics, params, outcomes, f"{ARTIFACT} {version.version}")
    baseline.save(Path(root) / BASELINE)
