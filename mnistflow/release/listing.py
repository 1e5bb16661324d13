"""Every registered version side by side: stages, record, data, accuracy with its interval, and
the verdict its gates gave; who moved which version where; how often the test set decided.

Everything is read from git: each version's record holds its dvc.lock, reports/export.json
and reports/test_outcomes.json, and GTO's tags hold the stages and their history. What
`mnistflow registry` prints (at most 100 columns) and the report's release section show.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import yaml

from mnistflow.core.dvc_lock import recorded_md5
from mnistflow.core.git import file_at_revision, git, git_or_none
from mnistflow.paths import DVC_LOCK, EXPORT_REPORT, METRICS, RAW_DATA, TEST_OUTCOMES
from mnistflow.release.promotion import StageMove, stage_moves
from mnistflow.release.records import EXPERIMENT_REFS
from mnistflow.release.registry import ARTIFACT_DVC_FILE, version_rows

WIDTH = 100


@dataclass(frozen=True)
class VersionSummary:
    version: str
    stages: str
    record: str
    data: str  # the raw data's md5 in the record's dvc.lock, shortened
    accuracy: float | None
    accuracy_low: float | None
    accuracy_high: float | None
    comparison: str  # against the baseline its gate saw, in a few words
    verdict: str

    def as_json(self) -> dict:
        return dict(self.__dict__)


def version_summaries(root: Path, moves: list[StageMove]) -> list[VersionSummary]:
    """One summary per registered version, newest first. Every figure is read from what its
    record holds, checked: a field of the wrong kind shows as "-", never fails the listing."""
    skipped = {(move.assignment.version, move.assignment.stage) for move in moves if move.skipped}
    summaries = []
    for row in version_rows(root):
        revision = row["revision"]
        stages = [
            f"{stage}!" if (row["version"], stage) in skipped else stage for stage in row["stages"]
        ]
        report = _json_at(root, revision, EXPORT_REPORT)
        quality = report.get("quality") if isinstance(report.get("quality"), dict) else {}
        accuracy = _fraction(quality.get("accuracy"))
        if accuracy is None:
            accuracy = _fraction(_json_at(root, revision, METRICS).get("accuracy"))
        summaries.append(
            VersionSummary(
                version=row["version"],
                stages=",".join(stages) or "-",
                record=_record_name(root, revision),
                data=_data_version(root, revision),
                accuracy=accuracy,
                accuracy_low=_fraction(quality.get("accuracy_low")),
                accuracy_high=_fraction(quality.get("accuracy_high")),
                comparison=_comparison(quality.get("baseline")),
                verdict=str(report.get("verdict", "-")),
            )
        )
    return summaries


def _fraction(value: object) -> float | None:
    """A recorded accuracy or bound: a number in 0..1, else None (shown as "-")."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        return None
    return float(value)


def _data_version(root: Path, revision: str) -> str:
    """The raw data's md5 in the record's dvc.lock, shortened; "-" where unreadable."""
    try:
        md5 = recorded_md5(file_at_revision(root, revision, DVC_LOCK), RAW_DATA)
    except (yaml.YAMLError, AttributeError, KeyError, TypeError, ValueError):
        return "-"
    return md5[:8] if isinstance(md5, str) else "-"


def _json_at(root: Path, revision: str, path: str) -> dict:
    """A JSON object recorded at `revision`; {} where it is absent or not an object."""
    try:
        content = json.loads(file_at_revision(root, revision, path) or "{}")
    except ValueError:
        return {}
    return content if isinstance(content, dict) else {}


def _record_name(root: Path, revision: str) -> str:
    """The record (DVC experiment) the version was stamped with, from its .dvc file."""
    try:
        tracked = yaml.safe_load(file_at_revision(root, revision, ARTIFACT_DVC_FILE) or "")
    except yaml.YAMLError:
        return "-"
    meta = tracked.get("meta") if isinstance(tracked, dict) else None
    return str(meta.get("record")) if isinstance(meta, dict) and meta.get("record") else "-"


def _comparison(baseline: object) -> str:
    if not isinstance(baseline, dict):
        return "no baseline"
    difference, p_value = baseline.get("difference"), baseline.get("p_value_worse")
    if any(
        isinstance(value, bool) or not isinstance(value, int | float) or not -1 <= value <= 1
        for value in (difference, p_value)
    ):
        return "-"
    paired = "" if baseline.get("test") == "mcnemar_exact" else " unpaired"
    return f"{difference:+.4f} p={p_value:.2g}{paired}"


def listing_lines(root: Path) -> list[str]:
    """What `mnistflow registry` prints; empty when no version is registered."""
    from mnistflow.release.registry import SERVED_STAGE, version_in_stage

    moves = stage_moves(root)
    summaries = version_summaries(root, moves)
    if not summaries:
        return []
    prod = version_in_stage(root, SERVED_STAGE)
    return render(
        summaries,
        moves,
        decisions_per_test_set(root),
        baseline_warnings(root, prod.version if prod else None),
    )


def decisions_per_test_set(root: Path) -> Counter:
    """How many release decisions each test set (its sha256) has made in this clone's
    records: distinct export reports among the experiments and HEAD, so a rerun that
    decided nothing new is not counted twice. Every decision spends the test set again."""
    revisions = git(root, "for-each-ref", "--format=%(objectname)", EXPERIMENT_REFS).split()
    revisions.append("HEAD")
    decided: Counter = Counter()
    seen: set[str] = set()
    for revision in revisions:
        report = git_or_none(root, "rev-parse", "--verify", "-q", f"{revision}:{EXPORT_REPORT}")
        if report is None or report in seen:
            continue  # no decision, or one already counted: its outcomes are not read again
        seen.add(report)
        digest = _json_at(root, revision, TEST_OUTCOMES).get("test_set_sha256")
        if isinstance(digest, str):
            decided[digest] += 1
    return decided


def printable(text: str) -> str:
    """One line of text a terminal shows as it is: tags, reasons and names come from whoever
    could push to the remote, and a control character (an escape sequence, a newline) would
    rewrite what the terminal shows."""
    return "".join(character if character.isprintable() else "?" for character in text)


def render(
    summaries: list[VersionSummary],
    moves: list[StageMove],
    decisions: Counter,
    warnings: list[str] = (),
) -> list[str]:
    """The listing as lines of at most WIDTH columns (a longer reason is cut: `gto history`
    shows it whole)."""
    lines = [
        f"{'version':<8} {'stages':<14} {'record':<14} {'data':<8} "
        f"{'accuracy [interval]':<22} {'vs baseline':<18} verdict"
    ]
    for entry in summaries:
        accuracy = "-"
        if entry.accuracy is not None:
            accuracy = f"{entry.accuracy:.4f}"
        if entry.accuracy_low is not None and entry.accuracy_high is not None:
            accuracy += f" [{entry.accuracy_low:.4f},{entry.accuracy_high:.4f}]"
        lines.append(
            f"{entry.version:<8.8} {entry.stages:<14.14} {entry.record:<14.14} "
            f"{entry.data:<8} {accuracy:<22} {entry.comparison:<18.18} {entry.verdict}"
        )
    if moves:
        lines += ["", "stage moves, newest first (! a skipped stage):"]
        for move in reversed(moves):
            entry = move.assignment
            mark = "!" if move.skipped else " "
            message = entry.message
            if move.skipped and not entry.forced:
                message = f"skipped {move.skipped}, no reason recorded (not mnistflow promote)"
            lines.append(
                f"{entry.timestamp[:16]:<16} {entry.version:<8.8} -> {entry.stage:<8.8}{mark} "
                f"{entry.author:<12.12} {message}"
            )
    if decisions:
        lines.append("")
    for digest, count in decisions.most_common():
        lines.append(
            f"test set {digest[:12]}: {count} release decision(s) recorded here, "
            "each one a fresh look at the same images"
        )
    lines += [f"warning: {warning}" for warning in warnings]
    return [fitted(printable(line)) for line in lines]


def fitted(line: str) -> str:
    """The line cut to WIDTH terminal columns (a wide character takes two)."""
    from rich.cells import cell_len, set_cell_size

    return (set_cell_size(line, WIDTH) if cell_len(line) > WIDTH else line).rstrip()


def baseline_warnings(root: Path, prod_version: str | None) -> list[str]:
    """What is off between the quality gate's baseline and the registry's prod version (a
    prod tag made outside `mnistflow promote` leaves the baseline behind)."""
    from mnistflow.errors import PipelineInputError
    from mnistflow.paths import BASELINE
    from mnistflow.release.gates import load_baseline
    from mnistflow.release.registry import ARTIFACT

    try:
        baseline = load_baseline(Path(root) / BASELINE)
    except PipelineInputError as error:
        return [str(error)]
    if prod_version is None:
        return []
    expected = f"{ARTIFACT} {prod_version}"
    if baseline is None or baseline.source != expected:
        found = baseline.source if baseline else "none"
        return [
            f"{BASELINE} is {found}'s, prod is {expected}: `mnistflow promote "
            f"{prod_version} --stage prod` writes its baseline"
        ]
    return []
