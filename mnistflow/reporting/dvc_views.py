"""DVC's metrics, params and plots diffs against a revision, computed in this process.

They give the JSON that `dvc metrics diff --json`, `dvc params diff --json` and `dvc plots
diff --json` print, built the way those commands build it (dvc/commands/{metrics,params,
plots}.py of the DVC release pinned in pyproject.toml), without DVC's start-up (about a
second each on these hosts), which a no-op `mnistflow run` would otherwise wait for
(benchmarks/results/flow_overhead.md). Each query opens its own Repo: switching revisions
changes a Repo's file system, so two queries never share one. A query that fails gives
None, as the command's non-zero exit did: the report is a view and shows what it can. Each
runs with the working directory at the project's root, as the commands did (DVC names files
relative to it), and with DVC's own log quiet: its messages may quote workspace files, and
the log line here names only the query, the revision and the kind of error.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def metrics_diff(root: Path, revision: str) -> dict[str, Any] | None:
    """`dvc metrics diff REVISION --all --json`: {file: {metric: {old, new, diff}}}."""

    def diff(repo) -> dict[str, Any]:
        return repo.metrics.diff(a_rev=revision, all=True).get("diff", {})

    return _query(root, f"metrics diff against {revision}", diff)


def params_diff(root: Path, revision: str) -> dict[str, Any] | None:
    """`dvc params diff REVISION --json`: {file: {param: {old, new}}}, changed ones only."""

    def diff(repo) -> dict[str, Any]:
        return repo.params.diff(a_rev=revision).get("diff", {})

    return _query(root, f"params diff against {revision}", diff)


def plots_json(root: Path, revisions: list[str], images_folder: Path) -> dict[str, Any] | None:
    """`dvc plots diff REVISIONS -o FOLDER --json` (`dvc plots show` with no revision):
    {"data": {plot: [entry, ...]}}; image plots are copied into `images_folder`."""
    from dvc.render.convert import to_json
    from dvc.render.match import match_defs_renderers

    def rendered(repo) -> dict[str, Any]:
        found = repo.plots.diff(revs=revisions) if revisions else repo.plots.show()
        renderers = match_defs_renderers(
            data=found, out=str(images_folder), templates_dir=repo.plots.templates_dir
        )
        return {"data": {item.renderer.name: to_json(item.renderer) for item in renderers}}

    return _query(root, f"plots against {revisions or 'nothing'}", rendered)


def _query(root: Path, what: str, ask: Callable[[Any], Any]) -> Any:
    from dvc.repo import Repo

    try:
        with contextlib.chdir(root), _quiet_dvc(), Repo(str(root)) as repo:
            return ask(repo)
    except Exception as error:  # noqa: BLE001 - DVC raises many kinds; the report goes on
        logger.warning("%s: not shown (%s)", what, type(error).__name__)
        return None


@contextlib.contextmanager
def _quiet_dvc() -> Iterator[None]:
    dvc_logger = logging.getLogger("dvc")
    level = dvc_logger.level
    dvc_logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        dvc_logger.setLevel(level)
