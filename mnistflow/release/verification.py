"""`mnistflow verify`: replay a revision, a recorded run or a registered version on this machine
and compare every output with what that revision's dvc.lock records.

How: a detached git worktree of the revision in a temporary folder, with its own DVC cache
(so nothing is restored from a cache instead of computed), the data source copied in when this
project has it (else ingest's output pulled from the DVC remote), then every stage forced in
dvc.yaml's order, each in its own `dvc repro --force --single-item` process. Then, per output:
identical or differs. For a model that differs: the argmax agreement and the largest
probability difference on the test set against the recorded model (where this clone's DVC
cache or remote has it), and the test-metric deltas. Both sides' compute fingerprints
(reports/compute.json: device, precision, kernels, threads, libraries) say why.

The worktree is removed afterwards (`git worktree remove`), so the repository is left as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mnistflow.core.dvc_cli import dvc
from mnistflow.core.dvc_lock import lock_content, recorded_md5, recorded_outputs
from mnistflow.core.git import file_at_revision, git, git_or_none
from mnistflow.core.hashing import md5_of_file
from mnistflow.core.json_files import read_json
from mnistflow.errors import PipelineInputError
from mnistflow.paths import (
    COMPUTE_FINGERPRINT,
    DVC_LOCK,
    INT8_MODEL,
    METRICS,
    ONNX_MODEL,
    PARAMS,
    RAW_DATA,
)
from mnistflow.release.records import EXPERIMENT_REFS
from mnistflow.release.tracked_bytes import bytes_at_revision, matches

ONNX_MODELS = (ONNX_MODEL, INT8_MODEL)


@dataclass(frozen=True)
class OutputComparison:
    stage: str
    path: str
    recorded: str | None
    replayed: str | None

    @property
    def identical(self) -> bool:
        return self.recorded is not None and self.recorded == self.replayed


@dataclass
class Verification:
    target: str
    revision: str
    outputs: list[OutputComparison] = field(default_factory=list)
    recorded_fingerprint: dict[str, Any] | None = None
    replayed_fingerprint: dict[str, Any] | None = None
    model_differences: dict[str, dict[str, Any]] = field(default_factory=dict)
    metric_deltas: dict[str, float] = field(default_factory=dict)
    data_from: str = ""

    @property
    def identical(self) -> bool:
        return bool(self.outputs) and all(output.identical for output in self.outputs)


def resolve_target(root: Path, target: str) -> str:
    """The commit a revision, a record (experiment name) or a registry version names."""
    from mnistflow.release import registry

    if target.startswith(registry.ARTIFACT) and target[len(registry.ARTIFACT) :][:1] in "@:":
        return registry.resolve(root, target).revision
    found = git_or_none(root, "rev-parse", "--verify", "--quiet", f"{target}^{{commit}}")
    if found is not None:
        return found.strip()
    for line in git(root, "for-each-ref", EXPERIMENT_REFS, "--format=%(refname) %(objectname)")\
            .splitlines():  # fmt: skip
        ref, _, commit = line.partition(" ")
        if ref.rsplit("/", 1)[-1] == target:
            return commit
    raise PipelineInputError(
        f"{target!r}: not a git revision, a recorded run (dvc exp list) or a registry version "
        f"({registry.ARTIFACT}@VERSION, {registry.ARTIFACT}:STAGE) of {root}"
    )


@contextmanager
def detached_worktree(root: Path, revision: str, keep: bool = False) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="mnistflow-verify-"))
    worktree = folder / "replay"
    try:
        git(root, "worktree", "add", "--detach", "--quiet", str(worktree), revision)
        yield worktree
    finally:
        if not keep:
            git_or_none(root, "worktree", "remove", "--force", str(worktree))
            git_or_none(root, "worktree", "prune")
            shutil.rmtree(folder, ignore_errors=True)


def _dvc(worktree: Path, *arguments: str) -> subprocess.CompletedProcess:
    return dvc(worktree, *arguments, isolated=True)


def _configure_replay(root: Path, worktree: Path) -> None:
    """The worktree's own .dvc/config.local: a private cache (so nothing is restored from a
    cache instead of computed); this clone's local settings, which a git worktree does not
    share (`mnistflow.stack join` keeps the team's bucket, endpoint and credential file there),
    with each remote they name complete as this clone sees it (a local credentialpath on a
    committed URL); and remotes with relative URLs resolved from the project (they would
    otherwise resolve from the temporary folder). Written through DVC's own Config, which
    resolves the clone's relative paths on reading and makes them relative to the worktree on
    writing. The replay runs the revision's stage commands: verify only what you would run."""
    from dvc.config import merge
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from voluptuous import Invalid

    from mnistflow.orchestration.dvc_remotes import resolved_remote_urls

    _require_plain_dvc_folder(worktree)
    # A committed config.local is the revision's, not this machine's.
    (worktree / ".dvc" / "config.local").unlink(missing_ok=True)
    private_cache = worktree.parent / "cache"
    try:
        with Repo(str(root)) as repo:
            clone_local = repo.config.load_one("local")
            clone_view = _credential_settings(repo.config)
            seen = clone_view["remote"]
            # Copies: merging below writes into them, and clone_view must stay as read.
            remotes = {name: dict(seen[name]) for name in clone_local["remote"] if name in seen}
            resolved_urls = resolved_remote_urls(repo.config["remote"])
        with Repo(str(worktree)) as replay:
            with replay.config.edit("local") as replay_local:
                merge(replay_local, clone_local)
                merge(replay_local, {"remote": remotes})
                merge(replay_local, resolved_urls)
                replay_local["cache"]["dir"] = str(private_cache)
            foreign = _foreign_settings(replay.config, clone_view, private_cache)
    # RecursionError: configobj parsing sections nested a thousand deep.
    except (DvcException, Invalid, OSError, TypeError, ValueError, RecursionError) as error:
        raise PipelineInputError(f"cannot prepare the replay: {error}") from None
    if foreign:
        raise PipelineInputError(
            f"cannot prepare the replay: the revision's committed DVC config sets "
            f"{', '.join(foreign)} beyond what this clone uses; its stages would get this "
            "clone's remotes or credentials pointed elsewhere, or a cache outside the replay"
        )


def _require_plain_dvc_folder(worktree: Path) -> None:
    """.dvc a folder, its config a file reached without links, config.local absent or a file,
    and no link anywhere in .dvc (DVC writes its tmp/ folder there: locks, experiments)."""
    local = worktree / ".dvc" / "config.local"
    plain = (
        _reached_without_links(worktree, ".dvc/config")
        and _reached_without_links(worktree, ".dvc/config.local")
        and (worktree / ".dvc").is_dir()
        and (not local.exists() or local.is_file())
        and not any(
            os.path.islink(os.path.join(folder, name))
            for folder, folders, files in os.walk(worktree / ".dvc")
            for name in folders + files
        )
    )
    if not plain:
        raise PipelineInputError(
            "cannot prepare the replay: the revision commits .dvc, .dvc/config or "
            ".dvc/config.local as a link or as something other than a folder and files, "
            "or a link inside .dvc"
        )


# Cache settings DVC still honours besides `dir`: a remote named as the cache.
REMOTE_CACHE_KEYS = ("local", "s3", "gs", "ssh", "hdfs", "azure", "webhdfs")


def _credential_settings(config: Any) -> dict[str, Any]:
    """The settings of a loaded DVC config that say where data and credentials go: every
    remote, the default one, Studio (its token goes to its url) and the site cache folder."""
    return {
        "remote": {name: dict(settings) for name, settings in config["remote"].items()},
        "core.remote": config["core"].get("remote"),
        "studio": dict(config.get("studio", {})),
        "core.site_cache_dir": config["core"].get("site_cache_dir"),
    }


def _foreign_settings(
    replay_config: Any, clone_view: dict[str, Any], private_cache: Path
) -> list[str]:
    """What the replay's merged config holds that this clone's does not: a remote this clone
    does not have or sees otherwise (keys the revision adds to it: its credentials would go
    with them), another default remote, Studio or site cache folder, another cache."""
    replay_view = _credential_settings(replay_config)
    found = [
        f"remote {name!r}"
        for name, settings in replay_view.pop("remote").items()
        if settings != clone_view["remote"].get(name)
    ]
    found += [key for key, value in replay_view.items() if value != clone_view[key]]
    cache = replay_config["cache"]
    found += [f"cache.{key}" for key in REMOTE_CACHE_KEYS if key in cache]
    if Path(cache.get("dir", "")).resolve() != private_cache.resolve():
        found.append("cache.dir")
    return found


def _recorded_source_md5(lock_text: str, source: str) -> str | None:
    """The md5 the revision's dvc.lock records for ingest's data source."""
    lock = lock_content(lock_text)
    for dep in ((lock.get("stages") or {}).get("ingest") or {}).get("deps") or []:
        if dep.get("path") == source:
            return dep.get("md5")
    return None


def _reached_without_links(root: Path, relative: str) -> bool:
    """Whether `root`/`relative` stays inside `root` with no link on the way (a component that
    does not exist yet is no link)."""
    parts = Path(relative).parts
    if not parts or Path(relative).is_absolute() or ".." in parts:
        return False
    return not any((root / Path(*parts[: depth + 1])).is_symlink() for depth in range(len(parts)))


def _project_source(root: Path, source: str) -> Path | None:
    """`source` as a regular file inside this project, reached without links; None for a URL,
    an absolute path, a folder, or anything that leads elsewhere (the revision may be anyone's:
    its params must not make the replay read from outside the project)."""
    if "://" in source or not _reached_without_links(root, source):
        return None
    return root / source if (root / source).is_file() else None


def _provide_data(root: Path, worktree: Path, lock_text: str, report: Callable[[str], None]) -> str:
    """The revision's data source copied in from this project when it is a file in the project
    whose bytes are the ones the revision's dvc.lock records; else ingest's output from the DVC
    remote. Returns where the data came from."""
    params = yaml.safe_load((worktree / PARAMS).read_text(encoding="utf-8")) or {}
    source = str((params.get("data") or {}).get("source") or "")
    recorded = _recorded_source_md5(lock_text, source)
    here = _project_source(root, source)
    # The worktree is the revision's: a link it commits must not aim this copy elsewhere.
    copyable = here is not None and _reached_without_links(worktree, source)
    if copyable and recorded is not None and md5_of_file(here) == recorded:
        target = worktree / source
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(here, target)
        return f"recomputed from the source {source}"
    if here is not None:
        report(f"{source} here is not the file the revision recorded (md5 {recorded})")
    report(
        f"the source {source or '(none)'} is not a file of this project as recorded; pulling "
        f"{RAW_DATA} from the remote"
    )
    pulled = _dvc(worktree, "pull", "--quiet", RAW_DATA)
    if pulled.returncode != 0:
        raise PipelineInputError(
            f"cannot replay: the data source {source!r} is not in this project as recorded and "
            f"{RAW_DATA} is not on the DVC remote ({pulled.stderr.strip()[-300:]})"
        )
    return "ingest's output from the DVC remote (ingest itself not replayed)"


def replay(worktree: Path, skip_ingest: bool, report: Callable[[str], None]) -> None:
    from mnistflow.orchestration.project import stage_names

    for stage in stage_names(worktree):
        if stage == "ingest" and skip_ingest:
            continue
        started = time.perf_counter()
        report(f"replaying {stage} ...")
        ran = _dvc(worktree, "repro", "--force", "--single-item", "--no-run-cache", stage)
        if ran.returncode != 0:
            raise PipelineInputError(
                f"the replay's {stage} stage failed:\n{(ran.stderr or ran.stdout).strip()[-2000:]}"
            )
        report(f"replayed {stage} in {time.perf_counter() - started:.1f} s")


def _recorded_model(root: Path, revision: str, path: str, folder: Path) -> Path | None:
    """The recorded model's bytes, from this clone's DVC cache or remote, checked against the
    md5 its dvc.lock records; None where neither has it."""
    expected = recorded_md5(file_at_revision(root, revision, DVC_LOCK), path)
    try:
        content = bytes_at_revision(root, revision, path)
    except Exception:  # noqa: BLE001 - not in the cache or on a remote: no comparison
        return None
    if not matches(content, expected):
        return None
    target = folder / f"recorded-{Path(path).name}"
    target.write_bytes(content)
    return target


def _json_or_empty(text: str | None) -> dict[str, Any]:
    try:
        content = json.loads(text) if text else {}
    except ValueError:
        return {}
    return content if isinstance(content, dict) else {}


def _model_difference(recorded: Path | None, replayed: Path, raw: Path) -> dict[str, Any]:
    if recorded is None:
        return {
            "note": "the recorded model is in neither this clone's DVC cache nor its remote; "
            "compared by hash only"
        }
    try:
        return compare_models(recorded, replayed, raw)
    except Exception as error:  # noqa: BLE001 - the verdict stands; say why figures are missing
        return {"note": f"could not run both models ({type(error).__name__}: {error})"}


def compare_models(recorded: Path, replayed: Path, raw: Path) -> dict[str, Any]:
    """Argmax agreement and the largest probability difference on the test set."""
    import numpy as np
    import onnxruntime

    from mnistflow.data.sources import load_npz

    images = load_npz(raw).x_test
    probabilities = []
    for path in (recorded, replayed):
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        shape = session.get_inputs()[0].shape
        batch = images.reshape((len(images), *[d for d in shape[1:] if isinstance(d, int)]))
        probabilities.append(session.run(None, {name: batch.astype(np.uint8)})[0])
    first, second = probabilities
    return {
        "argmax_agreement": float((first.argmax(1) == second.argmax(1)).mean()),
        "max_abs_probability_diff": float(np.abs(first - second).max()),
        "test_images": len(images),
    }


def verify(
    root: Path,
    target: str,
    report: Callable[[str], None] = lambda line: None,
    keep: bool = False,
) -> Verification:
    root = Path(root).resolve()
    revision = resolve_target(root, target)
    lock_text = file_at_revision(root, revision, DVC_LOCK)
    if lock_text is None:
        raise PipelineInputError(f"{target} ({revision[:7]}): no dvc.lock there; nothing to verify")
    result = Verification(target, revision)
    recorded_fingerprint = file_at_revision(root, revision, COMPUTE_FINGERPRINT)
    result.recorded_fingerprint = _json_or_empty(recorded_fingerprint) or None
    with detached_worktree(root, revision, keep) as worktree:
        report(f"replaying {target} ({revision[:7]}) in {worktree}")
        _configure_replay(root, worktree)
        result.data_from = _provide_data(root, worktree, lock_text, report)
        replay(worktree, skip_ingest=result.data_from.startswith("ingest's"), report=report)
        replayed = {(stage, path): md5 for stage, path, md5 in recorded_outputs(
            (worktree / DVC_LOCK).read_text(encoding="utf-8"))}  # fmt: skip
        result.outputs = [
            OutputComparison(stage, path, md5, replayed.get((stage, path)))
            for stage, path, md5 in recorded_outputs(lock_text)
        ]
        result.replayed_fingerprint = read_json(worktree / COMPUTE_FINGERPRINT)
        differing = {o.path for o in result.outputs if not o.identical}
        for path in ONNX_MODELS:
            if path in differing:
                recorded = _recorded_model(root, revision, path, worktree.parent)
                result.model_differences[path] = _model_difference(
                    recorded, worktree / path, worktree / RAW_DATA
                )
        recorded_metrics = _json_or_empty(file_at_revision(root, revision, METRICS))
        replayed_metrics = read_json(worktree / METRICS) or {}
        result.metric_deltas = {
            name: replayed_metrics[name] - value
            for name, value in recorded_metrics.items()
            if isinstance(value, (int, float))
            and isinstance(replayed_metrics.get(name), (int, float))
        }
    return result


def describe(result: Verification) -> list[str]:
    """The verdict in short lines: per output, then the fingerprints side by side."""
    lines = [f"verify {result.target} ({result.revision[:7]}); data {result.data_from}"]
    width = max((len(o.path) for o in result.outputs), default=10)
    for output in result.outputs:
        verdict = "identical" if output.identical else "DIFFERS"
        detail = (
            ""
            if output.identical
            else f"  recorded {str(output.recorded)[:8]}, replayed {str(output.replayed)[:8]}"
        )
        lines.append(f"  {output.path:<{width}}  {verdict}{detail}")
    for path, figures in result.model_differences.items():
        if "note" in figures:
            lines.append(f"  {path}: {figures['note']}")
        else:
            lines.append(
                f"  {path}: argmax agreement {figures['argmax_agreement']:.4f}, largest "
                f"probability difference {figures['max_abs_probability_diff']:.3g} on "
                f"{figures['test_images']} test images"
            )
    changed = {k: v for k, v in result.metric_deltas.items() if v}
    if changed:
        lines.append("  test metrics, replayed - recorded: " + ", ".join(
            f"{name} {delta:+.4f}" for name, delta in sorted(changed.items())))  # fmt: skip
    lines.extend(_fingerprint_lines(result.recorded_fingerprint, result.replayed_fingerprint))
    identical = sum(o.identical for o in result.outputs)
    lines.append(
        f"{identical} of {len(result.outputs)} outputs identical"
        + ("" if result.identical else "; this machine does not reproduce the record")
    )
    return lines


def _flatten(document: dict[str, Any] | None, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in (document or {}).items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value) if not isinstance(value, str) else value
    return flat


def _fingerprint_lines(recorded: dict | None, replayed: dict | None) -> list[str]:
    if recorded is None:
        return ["  compute: the revision recorded no reports/compute.json"]
    old, new = _flatten(recorded), _flatten(replayed)
    differing = [key for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
    if not differing:
        summary = ", ".join(f"{k} {old[k]}" for k in (
            "device", "precision", "tensorflow_cpu_kernels", "tensorflow_threads",
            "onnxruntime_cpu_kernels") if k in old)  # fmt: skip
        return [f"  compute: the same on both sides ({summary})"]
    return ["  compute differs (recorded -> here):"] + [
        f"    {key}: {old.get(key, '-')} -> {new.get(key, '-')}" for key in differing
    ]
