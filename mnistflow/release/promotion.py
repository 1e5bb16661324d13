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

import logging
from dataclasses import dataclass
from pathlib import Path

from mnistflow.core.git import file_at_revision
from mnistflow.errors import PipelineInputError
from mnistflow.paths import BASELINE, METRICS, PARAMS, TEST_OUTCOMES
from mnistflow.release import registry
from mnistflow.release.gates import AccuracyBaseline, recorded_baseline
from mnistflow.release.records import git_remote
from mnistflow.release.registry import ARTIFACT, SERVED_STAGE, ModelVersion, version_in_stage

logger = logging.getLogger(__name__)

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
        """Made with --force (its message says so; whether it skipped is skipped_stage's)."""
        return self.message.startswith(FORCED)


@dataclass(frozen=True)
class StageMove:
    """An assignment, and the stage it skipped as the history shows it (whatever its
    message says: a tag made by hand skips on record too)."""

    assignment: Assignment
    skipped: str | None

    def as_json(self) -> dict:
        return {**self.assignment.__dict__, "skipped": self.skipped}


def stage_order(root: Path) -> tuple[str, ...]:
    """The registry's stages, lowest first: `.gto`'s `stages`, else DEFAULT_STAGE_ORDER."""
    from gto.exceptions import GTOException
    from gto.registry import GitRegistry

    try:
        with GitRegistry.from_url(str(root)) as gto_registry:
            configured = gto_registry.config.stages
    except GTOException as error:
        raise PipelineInputError(f"{Path(root) / '.gto'}: {error}") from None
    order = tuple(configured) if configured else DEFAULT_STAGE_ORDER
    if len(set(order)) != len(order):
        raise PipelineInputError(
            f"{Path(root) / '.gto'}: stages {list(order)}: expected each stage once"
        )
    return order


def assignments(root: Path) -> list[Assignment]:
    """Every stage assignment of the artifact, oldest first."""
    import gto.api
    from gto.exceptions import ArtifactNotFound

    try:
        events = gto.api.history(str(root), ARTIFACT, ascending=True)
    except ArtifactNotFound:
        return []
    ordered = sorted(
        (event for event in events if event["event"] == "assignment"),
        key=lambda event: (event["timestamp"], _tag_counter(event)),
    )
    return [
        Assignment(
            str(event["version"]),
            str(event["stage"]),
            str(event.get("author") or ""),
            str(event["timestamp"]),
            str(event.get("message") or "").strip(),
        )
        for event in ordered
    ]


def _tag_counter(event: dict) -> int:
    """An assignment's place among those made in the same second: GTO numbers every stage
    tag one past the highest this clone has seen (`name#stage#N`). Tag times have one-second
    resolution, so assignments made within a second tie on time, and GTO leaves those in
    arbitrary order. Time stays first, as GTO orders the history it serves by: the counter
    of tags made in clones that had not fetched each other's may run against time. A tag
    without a counter (GTO's old format) counts 0."""
    from gto.constants import COUNTER
    from gto.tag import parse_name

    parsed = parse_name(str(event.get("ref") or ""), raise_on_fail=False) or {}
    return int(parsed.get(COUNTER) or 0)


def stage_moves(root: Path) -> list[StageMove]:
    """Every assignment, oldest first, with the stage it skipped (judged on the assignments
    before it; a stage name outside the order counts as no skip, GTO refused none such)."""
    order = stage_order(root)
    history = assignments(root)
    moves = []
    for position, entry in enumerate(history):
        skipped = (
            skipped_stage(order, history[:position], entry.version, entry.stage)
            if entry.stage in order
            else None
        )
        moves.append(StageMove(entry, skipped))
    return moves


def required_stage(order: tuple[str, ...], stage: str) -> str | None:
    """The stage a version must have held before `stage`; None for the first one."""
    if stage not in order:
        raise PipelineInputError(
            f"{stage!r} is not a registry stage; expected one of {', '.join(order)} (.gto)"
        )
    position = order.index(stage)
    return order[position - 1] if position else None


def skipped_stage(
    order: tuple[str, ...], earlier: list[Assignment], version: str, stage: str
) -> str | None:
    """The stage `version` skipped to reach `stage`, given the `earlier` assignments: the
    one before `stage` when the version never held it; None when it did (or `stage` is
    the first)."""
    before = required_stage(order, stage)
    held = {(entry.version, entry.stage) for entry in earlier}
    return before if before is not None and (version, before) not in held else None


def promote(
    root: Path, version: str, stage: str = SERVED_STAGE, force_reason: str | None = None
) -> ModelVersion:
    """Assign `stage` to `version`, in order unless `force_reason` says why not; for prod,
    its test outcome becomes the quality gate's baseline (read and checked before the
    assignment, so a version whose record cannot be a baseline is never put in prod)."""
    import gto.api
    from gto.exceptions import GTOException

    order = stage_order(root)
    skipped = skipped_stage(order, assignments(root), version, stage)
    reason = (force_reason or "").strip()
    if skipped and not reason:
        raise PipelineInputError(
            f"{ARTIFACT} {version} was never in {skipped}; stages go {' -> '.join(order)}: "
            f"promote it to {skipped} first, or skip with --force REASON"
        )
    if force_reason is not None and not skipped:
        logger.warning("%s %s skips no stage to reach %s: --force is not needed", ARTIFACT,
                       version, stage)  # fmt: skip
    baseline = None
    if stage == SERVED_STAGE:
        found = registry.resolve(root, f"{ARTIFACT}@{version}")
        baseline = recorded_baseline_of(root, found)
    message = (
        f"{FORCED}: skipped {skipped}: {reason}" if skipped else f"{ARTIFACT} {version} -> {stage}"
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
    if baseline is not None:
        baseline.save(Path(root) / BASELINE)
    return promoted


def recorded_baseline_of(root: Path, version: ModelVersion) -> AccuracyBaseline:
    """The baseline a registered version's record makes (checked: a hostile record is
    refused here, naming the version)."""
    metrics = file_at_revision(root, version.revision, METRICS)
    params = file_at_revision(root, version.revision, PARAMS)
    if metrics is None or params is None:
        raise PipelineInputError(f"{ARTIFACT} {version.version}: no metrics recorded with it")
    # Versions recorded before test outcomes existed give an unpaired baseline.
    outcomes = file_at_revision(root, version.revision, TEST_OUTCOMES)
    return recorded_baseline(metrics, params, outcomes, f"{ARTIFACT} {version.version}")
