"""Every run that changes an output is recorded: as a DVC experiment in this repository, and
pushed to the remotes only where the clone publishes (mnistflow/release/publishing.py).

Why experiments (`dvc exp save`) rather than commits on a branch: they are DVC's own record of
a run — code revision (the baseline commit), params, dvc.lock with every data and model hash,
metrics and plots — listed by `dvc exp show`, compared by `dvc metrics diff` / `dvc plots
diff`, restored by `dvc exp apply` + `dvc pull`, and shared by `dvc exp push`, which sends the
git ref and the DVC-cached data together. They never move the user's branch.

A run that changed nothing (its dvc.lock equals the baseline commit's or the newest record's)
records nothing new; but where the clone publishes, a record whose push failed last time
(remote down) is pushed now, so a transient failure never leaves a run unshared.

Pushing data: DVC resolves a relative remote URL from the folder it works in, which for `dvc
exp push` is a temporary copy (a cache once landed in /mnistflow-dvc-remote). The data is
therefore pushed from the workspace itself, with the remote's URL resolved from the project.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from mnistflow.core.git import file_at_revision, git
from mnistflow.errors import PipelineInputError
from mnistflow.orchestration.dvc_runs import dvc_workspace
from mnistflow.paths import DVC_LOCK

logger = logging.getLogger(__name__)

EXPERIMENT_REFS = "refs/exps"
GIT_REMOTE = "origin"


@dataclass(frozen=True)
class RunRecord:
    name: str
    revision: str
    pushed_to: tuple[str, ...]
    new: bool = True

    def describe(self) -> str:
        where = ", ".join(self.pushed_to) if self.pushed_to else "this repository only"
        return f"experiment {self.name} ({self.revision[:7]}), stored in {where}"


def newest_record_ref(root: Path) -> tuple[str, str] | None:
    """(ref name, commit) of the most recent experiment in this repository, if any."""
    refs = git(
        root,
        "for-each-ref",
        EXPERIMENT_REFS,
        "--sort=-committerdate",
        "--format=%(refname) %(objectname)",
    ).split("\n")
    found = [line.split() for line in refs if line.strip()]
    return (found[0][0], found[0][1]) if found else None


def newest_record(root: Path) -> str | None:
    """The commit of the most recent experiment in this repository, if any."""
    found = newest_record_ref(root)
    return found[1] if found else None


def has_changes_to_record(root: Path) -> bool:
    """The workspace's dvc.lock differs from the baseline commit's and the newest record's."""
    lock = Path(root) / DVC_LOCK
    if not lock.is_file():
        return False
    current = lock.read_text(encoding="utf-8")
    recorded = [file_at_revision(root, "HEAD", DVC_LOCK)]
    newest = newest_record(root)
    if newest:
        recorded.append(file_at_revision(root, newest, DVC_LOCK))
    return current not in recorded


def git_remote(root: Path) -> str | None:
    return GIT_REMOTE if GIT_REMOTE in git(root, "remote").split() else None


def record_name(now: datetime | None = None) -> str:
    """run-20261123-020004-517: to the millisecond, so two records never share a name."""
    return "run-" + (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S-%f")[:-3]


def record_run(
    root: Path, name: str | None = None, extra: Sequence[str] = (), publish: bool = False
) -> RunRecord | None:
    """`dvc exp save` the workspace when it holds a new result; push it to the remotes when
    `publish`.

    Git-tracked outputs a fresh repository has not committed yet (metrics, plots, dvc.lock)
    are included, so the record is complete, and so are the untracked files `extra` names
    (the registry's stamped model, mnistflow/release/registry.py).
    """
    if not has_changes_to_record(root):
        return _newest_unless_stale(root, publish)
    name = name or record_name()
    with dvc_workspace(root) as repo:
        untracked = set(git(root, "ls-files", "--others", "--exclude-standard").splitlines())
        outputs = {str(out.fs_path) for out in repo.index.outs if not out.use_cache}
        relative = {str(Path(path).relative_to(Path(root).resolve())) for path in outputs}
        include = sorted(
            path
            for path in untracked
            if path == DVC_LOCK
            or path in extra
            or any(path == out or path.startswith(f"{out}/") for out in relative)
        )
        revision = repo.experiments.save(name=name, include_untracked=include or None)
        pushed = _publish(root, repo, name, revision) if publish else ()
    record = RunRecord(name, revision, pushed)
    logger.info("recorded %s", record.describe())
    return record


def current_record_ref(root: Path) -> tuple[str, str] | None:
    """(ref name, commit) of the newest record when it holds exactly the workspace's dvc.lock."""
    found = newest_record_ref(root)
    lock = Path(root) / DVC_LOCK
    if found is None or not lock.is_file():
        return None
    if file_at_revision(root, found[1], DVC_LOCK) != lock.read_text(encoding="utf-8"):
        return None
    return found


def _newest_unless_stale(root: Path, publish: bool) -> RunRecord | None:
    """The newest record when the workspace still holds its result; when publishing, pushed
    if it never was."""
    found = current_record_ref(root)
    if found is None:
        return None
    ref, revision = found
    remote = git_remote(root)
    if publish and remote and not git(root, "ls-remote", remote, ref).strip():
        with dvc_workspace(root) as repo:
            pushed = _publish(root, repo, ref.rsplit("/", 1)[-1], revision)
    else:
        pushed = ()
    return RunRecord(ref.rsplit("/", 1)[-1], revision, pushed, new=False)


def _publish(root: Path, repo, name: str, revision: str) -> tuple[str, ...]:
    """The git ref to the git remote and the record's data to the DVC remote, where configured."""
    dvc_remote = repo.config["core"].get("remote")
    remote = git_remote(root)
    pushed: tuple[str, ...] = ()
    if dvc_remote:
        push_data(root, repo, dvc_remote, revision)
        pushed += (f"DVC remote {dvc_remote}",)
    if remote:
        # The data went first: a record others can see always has its data on the remote.
        result = repo.experiments.push(remote, [name], push_cache=False)
        refused = [ref for status in ("diverged", "failed") for ref in result.get(status) or []]
        if refused:
            # DVC reports a ref the remote would not take instead of raising: say so, or the
            # record would count as pushed and never be retried.
            raise PipelineInputError(
                f"git remote {remote} did not take {', '.join(refused)} (it holds another "
                "commit under that name); the record stays local"
            )
        pushed = (f"git remote {remote}",) + pushed
    return pushed


def push_data(root: Path, repo, remote_name: str, revision: str) -> None:
    """`dvc push` of what `revision` tracks, from the workspace, to the remote's URL resolved
    from the project (mnistflow/orchestration/dvc_remotes.py)."""
    from dvc.repo import Repo

    from mnistflow.orchestration.dvc_remotes import resolved_remote_config

    with Repo(str(root), config=resolved_remote_config(root)) as resolved:
        resolved.push(remote=remote_name, revs=[revision], workspace=False)


def push_experiment(root: Path, name: str, revision: str) -> tuple[str, ...]:
    """Push an experiment `dvc exp run` recorded to the remotes (the caller decides to)."""
    with dvc_workspace(root) as repo:
        return _publish(root, repo, name, revision)
