"""Running DVC from Python: reproduce one stage, or run an experiment in a temporary copy.

The Prefect flows call these, so a Prefect run and `dvc repro` share one cache and one
dvc.lock, and an unchanged stage is skipped either way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mnistflow.core.git import git_or_none
from mnistflow.paths import PARAMS
from mnistflow.training.presets import format_value

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def dvc_workspace(root: Path | str) -> Iterator:
    """A DVC Repo for `root`, entered with the working directory at `root`.

    DVC's Python API resolves stage targets and output paths against the working directory,
    and its stage commands call `python`, which must be this interpreter.
    """
    from dvc.repo import Repo

    interpreter_dir = str(Path(sys.executable).parent)
    if interpreter_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([interpreter_dir, os.environ.get("PATH", "")])
    previous = Path.cwd()
    os.chdir(root)
    try:
        with Repo(str(root)) as repo:
            yield repo
    finally:
        os.chdir(previous)


def is_lock_error(error: BaseException) -> bool:
    """DVC's one-writer-per-workspace lock was held: worth a second try."""
    return "Unable to acquire lock" in str(error) or type(error).__name__ == "LockError"


def reproduce_stage(root: Path | str, stage: str) -> bool:
    """`dvc repro --single-item <stage>`; True when the stage ran, False when up to date."""
    with dvc_workspace(root) as repo:
        return bool(repo.reproduce(stage, single_item=True))


def current_stages(root: Path | str) -> set[str]:
    """The stages `dvc status` calls current: none of their deps, params or outputs changed
    since dvc.lock recorded them (an always_changed stage never is). One Repo and one status
    for the whole pipeline: reproducing an up-to-date stage opens a Repo and reads dvc.yaml,
    dvc.lock and params.yaml again per stage, most of a no-op run's stage time. Empty when
    the status cannot be read."""
    from dvc.stage import PipelineStage

    try:
        with dvc_workspace(root) as repo:
            changed = repo.status()
            stages = [stage for stage in repo.index.stages if isinstance(stage, PipelineStage)]
    except Exception as error:  # noqa: BLE001 - DVC's lock held, a .dvc file it cannot read
        # Nothing is taken as current: each stage is reproduced, with its task's retries.
        logger.warning("DVC's status is not readable (%s); every stage is reproduced", error)
        return set()
    changed_names = {name.split(":")[-1] for name in changed}
    return {
        stage.name
        for stage in stages
        if stage.name not in changed_names and not stage.always_changed
    }


def changed_stages(root: Path | str, stage: str) -> list[str]:
    """`dvc status --with-deps <stage>`: the stages up to `stage` whose inputs changed since
    their outputs were made (empty when its outputs are current)."""
    with dvc_workspace(root) as repo:
        status = repo.status(targets=[stage], with_deps=True)
    # An always_changed stage (compute) reports "always changed" on every status: that is its
    # nature, not a change. What it writes, if different, shows in the stages depending on it.
    return sorted(
        name.split(":")[-1] for name, entries in status.items() if entries != ["always changed"]
    )


def untracked_source_override(root: Path | str) -> dict[str, str]:
    """{"data.source": absolute path} when data.source is a relative path to a file neither git
    nor DVC tracks (the offline wheel under .cache/): `dvc exp run --temp` works in a copy
    holding only tracked files, where such a source would be missing."""
    import yaml

    from mnistflow.data.sources import is_url

    source = (yaml.safe_load((Path(root) / PARAMS).read_text()).get("data") or {}).get("source")
    if not source or is_url(source) or Path(source).is_absolute():
        return {}
    path = Path(root) / source
    tracked = (
        git_or_none(root, "ls-files", "--error-unmatch", source) is not None
        or Path(f"{path}.dvc").is_file()
    )
    return {} if tracked or not path.exists() else {"data.source": str(path.resolve())}


def run_experiment(
    root: Path | str, overrides: dict[str, Any], name: str | None = None
) -> dict[str, Any]:
    """`dvc exp run --temp --set-param ...`: the workspace's own results stay as they are."""
    overrides = {**untracked_source_override(root), **overrides}
    params = [f"{key}={format_value(value)}" for key, value in overrides.items()]
    with dvc_workspace(root) as repo:
        revisions = repo.experiments.run(params=params, tmp_dir=True, name=name)
        names = {
            revision: repo.experiments.get_exact_name([revision]).get(revision)
            for revision in revisions
        }
    return {
        "experiment": next(iter(names.values()), None),
        "revision": next(iter(names), None),
        "params": params,
    }
