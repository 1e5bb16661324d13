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
from mnistflow.release.promotion import Assignment, assignments
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


def version_summaries(root: Path) -> list[VersionSummary]:
    """One summary per registered version, newest first."""
    forced = {(entry.version, entry.stage) for entry in assignments(root) if entry.forced}
    summaries = []
    for row in version_rows(root):
        revision = row["revision"]
        stages = [
            f"{stage}!" if (row["version"], stage) in forced else stage for stage in row["stages"]
        ]
        quality = _json_at(root, revision, EXPORT_REPORT).get("quality") or {}
        accuracy = quality.get("accuracy", _json_at(root, revision, METRICS).get("accuracy"))
        summaries.append(
            VersionSummary(
                version=row["version"],
                stages=",".join(stages) or "-",
                record=_record_name(root, revision),
                data=(recorded_md5(file_at_revision(root, revision, DVC_LOCK), RAW_DATA) or "-")[
                    :8
                ],
                accuracy=accuracy if isinstance(accuracy, int | float) else None,
                accuracy_low=quality.get("accuracy_low"),
                accuracy_high=quality.get("accuracy_high"),
                comparison=_comparison(quality.get("baseline")),
                verdict=str(_json_at(root, revision, EXPORT_REPORT).get("verdict", "-")),
            )
        )
    return summaries


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
    if not isinstance(baseline, dict) or "difference" not in baseline:
        return "no baseline"
    paired = "" if baseline.get("test") == "mcnemar_exact" else " unpaired"
    return f"{baseline['difference']:+.4f} p={baseline.get('p_value_worse', 1):.2g}{paired}"


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
        digest = _json_at(root, revision, TEST_OUTCOMES).get("test_set_sha256")
        if report is None or not isinstance(digest, str) or report in seen:
            continue
        seen.add(report)
        decided[digest] += 1
    return decided


def printable(text: str) -> str:
    """One line of text a terminal shows as it is: tags, reasons and names come from whoever
    could push to the remote, and a control character (an escape sequence, a newline) would
    rewrite what the terminal shows."""
    return "".join(character if character.isprintable() else "?" for character in text)


def render(
    summaries: list[VersionSummary], moves: list[Assignment], decisions: Counter
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
        lines += ["", "stage moves, newest first (! a stage skipped with --force):"]
        for move in reversed(moves):
            mark = "!" if move.forced else " "
            lines.append(
                f"{move.timestamp[:16]:<16} {move.version:<8.8} -> {move.stage:<8.8}{mark} "
                f"{move.author:<12.12} {move.message}"
            )
    if decisions:
        lines.append("")
    for digest, count in decisions.most_common():
        lines.append(
            f"test set {digest[:12]}: {count} release decision(s) recorded here, "
            "each one a fresh look at the same images"
        )
    return [printable(line)[:WIDTH].rstrip() for line in lines]
