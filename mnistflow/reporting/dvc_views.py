"""DVC's metrics, params and plots diffs against a revision, computed in this process.

They give the JSON that `dvc metrics diff --json`, `dvc params diff --json` and `dvc plots
diff --json` print, built the way those commands build it (dvc/commands/{metrics,params,
plots}.py of the DVC release pinned in pyproject.toml), without DVC's start-up (about a
second each on these hosts), which a no-op `mnistflow run` would otherwise wait for
(benchmarks/results/flow_overhead.md). Each query opens its own Repo: switching revisions
changes a Repo's file system, so two queries never share one. A query that fails gives
None, as the command's non-zero exit did: the report is a view and shows what it can.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def metrics_diff(root: Path, revision: str) -> dict[str, Any] | None:
    """`dvc metrics diff REVISION --all --json`: {file: {metric: {old, new, diff}}}."""
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            return repo.metrics.diff(a_rev=revision, all=True).get("diff", {})
    except Exception as error:  # noqa: BLE001 - DVC raises many kinds; the report goes on
        logger.warning("metrics diff against %s: %s", revision, error)
        return None


def params_diff(root: Path, revision: str) -> dict[str, Any] | None:
    """`dvc params diff REVISION --json`: {file: {param: {old, new}}}, changed ones only."""
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            return repo.params.diff(a_rev=revision).get("diff", {})
    except Exception as error:  # noqa: BLE001 - as above
        logger.warning("params diff against %s: %s", revision, error)
        return None


def plots_json(root: Path, revisions: list[str], images_folder: Path) -> dict[str, Any] | None:
    """`dvc plots diff REVISIONS -o FOLDER --json` (`dvc plots show` with no revision):
    {"data": {plot: [entry, ...]}}; image plots are copied into `images_folder`."""
    from dvc.render.convert import to_json
    from dvc.render.match import match_defs_renderers
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            found = repo.plots.diff(revs=revisions) if revisions else repo.plots.show()
            renderers = match_defs_renderers(
                data=found, out=str(images_folder), templates_dir=repo.plots.templates_dir
            )
            return {"data": {item.renderer.name: to_json(item.renderer) for item in renderers}}
    except Exception as error:  # noqa: BLE001 - as above
        logger.warning("plots against %s: %s", revisions or "nothing", error)
        return None
