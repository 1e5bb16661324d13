"""Whether reports/report.html still shows what rebuilding it would show.

A no-op `mnistflow run` (every stage up to date) would otherwise spend most of its time
rebuilding the same page: DVC's diffs, the Vega-Lite charts rendered to SVG, the picture
grids (benchmarks/results/flow_overhead.md). The flow's report carries a fingerprint of what
it was built from, in a <meta name="mnistflow-inputs"> tag; a run whose fingerprint matches
leaves the page as it is. Its summary is then made from the run's own reports and the
baseline the page carries beside the fingerprint (which version, and its test metrics:
checked field by field, gather.parse_baseline_record), so such a run asks neither DVC nor
GTO anything; a page anyone rewrote can at most misname the baseline column. The
fingerprint covers:

- git: HEAD, every ref with its object (branches, the registry's tags, the records), and the
  content of every file the working tree changed or added; where git cannot answer there is
  no fingerprint, and the page is always built again;
- dvc.lock (after the run's `dvc repro`, which has just checked the workspace's outputs
  against it, it names every DVC output the report reads), params.yaml, dvc.yaml, .gto,
  DVC's config and plot templates, hashed whatever git says of them;
- the inbox runs' statistics files, which no DVC stage writes;
- the sources of the installed mnistflow package and the host facts and library versions
  the page lists;
- the stages' outcomes, not their seconds: the first no-op after a run that trained builds
  a new page (its stage table changes); the ones after it keep that page.

A changed input changes the fingerprint, so a stale page is rebuilt; a page someone replaced
keeps whatever fingerprint it carries, as any file in the workspace can be replaced after a
run: the page is a view of the outputs, never an input to anything.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnistflow.core.git import git_or_none
from mnistflow.core.hashing import sha256_of_file
from mnistflow.paths import INBOX_PREDICTIONS

# Bump when what goes into the fingerprint changes: pages fingerprinted otherwise rebuild.
FINGERPRINT_VERSION = "1"
# The tags are in the page's first lines; a page is never read further than this.
HEAD_BYTES = 16 * 1024
META = re.compile(rb'<meta name="mnistflow-inputs" content="([0-9a-f]{64})">')
BASELINE = re.compile(rb'<meta name="mnistflow-baseline" content="([^"<>]*)">')
# Read by the report whatever git says of them: params, DVC's plot definitions and config,
# GTO's stages.
PROJECT_FILES = ("dvc.lock", "params.yaml", "dvc.yaml", ".gto", ".dvc/config", ".dvc/config.local")
# Changed files larger than this enter by size and modification time, not content.
MAX_HASHED_BYTES = 16 * 1024 * 1024


def report_fingerprint(
    root: Path, stages: list[dict[str, Any]], environment: dict[str, str]
) -> str | None:
    """The sha256 of everything the report at `root` would be built from (module docstring);
    `environment`: the host facts and library versions the page lists. None where git cannot
    answer (no repository, a refused one): the page is then always built again."""
    answers = {
        label: git_or_none(root, *arguments)
        for label, arguments in (
            ("top", ("rev-parse", "--show-toplevel")),
            ("head", ("rev-parse", "HEAD")),
            ("refs", ("for-each-ref", "--format=%(objectname) %(refname)")),
            ("changes", ("status", "--porcelain=v1", "-z", "--untracked-files=all")),
        )
    }
    if any(answer is None for answer in answers.values()):
        return None
    digest = hashlib.sha256(f"mnistflow report inputs {FINGERPRINT_VERSION}\n".encode())

    def feed(label: str, data: bytes) -> None:
        digest.update(f"{label} {len(data)}\n".encode())
        digest.update(data)

    for label, answer in answers.items():
        feed(label, str(answer).encode("utf-8", "surrogateescape"))
    # Porcelain paths are relative to the repository's top, which may be above the project.
    top = Path(str(answers["top"]).strip())
    for path in _changed_paths(str(answers["changes"])):
        feed(f"changed {path}", _file_identity(top / path))
    # The project's own configuration, read whatever git says (it may be ignored or odd).
    for name in PROJECT_FILES:
        feed(f"project {name}", _file_identity(root / name))
    plots = root / ".dvc" / "plots"
    for path in _plain_files(plots, "**/*"):
        feed(f"plots {path.relative_to(plots)}", _file_identity(path))
    statistics = root / INBOX_PREDICTIONS / "statistics"
    for path in _plain_files(statistics, "*.json"):
        feed(f"serving {path.name}", _file_identity(path))
    package = Path(__file__).resolve().parents[1]
    for path in _plain_files(package, "**/*.py", "**/*.j2"):
        feed(f"source {path.relative_to(package)}", _file_identity(path))
    feed("environment", json.dumps(environment, sort_keys=True).encode())
    outcomes = [(str(stage.get("stage")), bool(stage.get("ran"))) for stage in stages]
    feed("stages", json.dumps(outcomes).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class RecordedInputs:
    """What a page says it was built from, and the baseline it compared with (JSON)."""

    inputs: str
    baseline: str


def recorded_fingerprint(page: Path) -> RecordedInputs | None:
    """The fingerprint and baseline the page at `page` carries; None for a missing page, a
    link, anything but a plain file, or a page without them in its first HEAD_BYTES."""
    try:
        descriptor = os.open(page, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        head = handle.read(HEAD_BYTES)
    found, baseline = META.search(head), BASELINE.search(head)
    if not found or not baseline:
        return None
    text = html.unescape(baseline.group(1).decode("utf-8", "replace"))
    return RecordedInputs(found.group(1).decode("ascii"), text)


def _changed_paths(porcelain: str) -> list[str]:
    """The paths in `git status --porcelain -z`'s answer (a rename's new path only)."""
    entries = porcelain.split("\0")
    paths, position = [], 0
    while position < len(entries):
        entry = entries[position]
        position += 1
        if len(entry) < 4:
            continue
        paths.append(entry[3:])
        if entry[0] in "RC":  # a rename or copy is followed by its old path
            position += 1
    return sorted(paths)


def _file_identity(path: Path) -> bytes:
    """A file's content (its sha256), or what stands in for it: its size and time where it
    is larger than MAX_HASHED_BYTES, its kind where it is not a plain file (never followed)."""
    try:
        status = path.lstat()
    except OSError:
        return b"missing"
    if not stat.S_ISREG(status.st_mode):
        target = os.readlink(path) if stat.S_ISLNK(status.st_mode) else ""
        return f"kind {stat.S_IFMT(status.st_mode)} {target}".encode("utf-8", "surrogateescape")
    if status.st_size > MAX_HASHED_BYTES:
        return f"size {status.st_size} mtime {status.st_mtime_ns}".encode()
    try:
        return sha256_of_file(path).encode("ascii")
    except OSError as error:
        return f"unreadable {error.errno}".encode()


def _plain_files(folder: Path, *patterns: str) -> Iterable[Path]:
    """The entries under `folder` matching `patterns`, sorted; none where it is a link
    (each entry's own kind is _file_identity's to say)."""
    if folder.is_symlink() or not folder.is_dir():
        return []
    return sorted({path for pattern in patterns for path in folder.glob(pattern)})
