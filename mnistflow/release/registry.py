"""The model registry in DVC's own format: GTO git tags on recorded runs.

The registered model is declared under `artifacts:` in dvc.yaml: release/model.onnx. When a
run's gates released a new model, the flow stamps a copy of models/model.onnx with its
lineage (version, record, code revision, data hashes: mnistflow/release/lineage.py) at that path,
tracked by release/model.onnx.dvc, which the record (the DVC experiment commit) includes; the
commit then gets a version tag (`mnist-classifier@v0.2.0`, GTO's format). `promote` assigns a
stage (`mnist-classifier#prod#3`). Tags and commits travel through the git remote, the
weights through the DVC remote, so in any clone `dvc artifacts get . mnist-classifier --stage
prod` fetches the very bytes. GTO's own CLI (`gto show`, `gto assign`) reads the same tags.

Why a copy made at registration rather than the export stage's own file: the version and the
record exist only after the run, and the export stage's output must be byte-identical on
every rerun of the same inputs.

Stages and their order are mnistflow/release/promotion.py's.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

# At import, never lazily inside a running flow: importing gto runs logging.config.dictConfig,
# which flushes Prefect's log handler while holding logging's lock that the handler's worker
# thread needs too (a threaded inbox run hung on it).
import gto.api
import yaml

from mnistflow.core.dvc_lock import recorded_md5
from mnistflow.core.git import file_at_revision, git
from mnistflow.core.onnx_metadata import metadata_of
from mnistflow.errors import PipelineInputError
from mnistflow.orchestration.dvc_runs import dvc_workspace
from mnistflow.paths import (
    DVC_LOCK,
    DVC_YAML,
    EXPORT_REPORT,
    ONNX_MODEL,
    REGISTERED_MODEL,
)
from mnistflow.release import lineage
from mnistflow.release.records import RunRecord, git_remote
from mnistflow.release.tracked_bytes import bytes_at_revision, matches

logger = logging.getLogger(__name__)

ARTIFACT = "mnist-classifier"
# What each version points at: the stamped copy, tracked by its own .dvc file in the record.
ARTIFACT_DVC_FILE = f"{REGISTERED_MODEL}.dvc"
# The export stage's output, which the stamped copy is made from.
# The registry stage whose version is served by default, and the name that asks for it.
SERVED_STAGE = "prod"
SERVED = "served"


@dataclass(frozen=True)
class ModelVersion:
    version: str
    revision: str


def latest_version(root: Path) -> ModelVersion | None:
    from gto.exceptions import ArtifactNotFound

    try:
        found = gto.api.find_latest_version(str(root), ARTIFACT)
    except ArtifactNotFound:
        return None
    return ModelVersion(found.version, found.commit_hexsha) if found else None


def version_in_stage(root: Path, stage: str) -> ModelVersion | None:
    from gto.exceptions import ArtifactNotFound

    try:
        found = gto.api.find_versions_in_stage(str(root), ARTIFACT, stage)
    except ArtifactNotFound:
        return None
    found = found[0] if isinstance(found, list) and found else found
    return ModelVersion(found.version, found.commit_hexsha) if found else None


def exported_model_hash(lock_text: str | None) -> str | None:
    """The md5 a dvc.lock records for the export stage's model."""
    return recorded_md5(lock_text, ONNX_MODEL)


def next_version(root: Path) -> str:
    """GTO's numbering, decided before the record exists: v0.0.1, then minor bumps of the
    highest version any tag names (deregistered ones included: a tag name is never reused)."""
    from gto.versions import SemVer

    prefix = f"{ARTIFACT}@"
    versions = [
        SemVer(tag[len(prefix) :])
        for tag in git(root, "tag", "--list", f"{prefix}*").split()
        if SemVer.is_valid(tag[len(prefix) :])
    ]
    return max(versions).bump_minor().version if versions else SemVer.get_minimal().version


def prepare_release(root: Path, record_name: str) -> str | None:
    """When the workspace holds a model its gates released and the registry does not have
    yet: stamp release/model.onnx with the version it will get and `dvc add` it. Returns the
    .dvc file the record must include, or None when there is nothing to register."""
    root = Path(root)
    if not _has_new_release(root):
        return None
    version = next_version(root)
    try:
        _stamp_and_track(root, version, record_name)
    except Exception:
        clear_release(root)
        raise
    return ARTIFACT_DVC_FILE


def _has_new_release(root: Path) -> bool:
    """The workspace's export was released and differs from the latest registered model."""
    report, lock = root / EXPORT_REPORT, root / DVC_LOCK
    if not report.is_file() or not lock.is_file():
        return False
    if not json.loads(report.read_text(encoding="utf-8")).get("released"):
        return False
    latest = latest_version(root)
    exported = exported_model_hash(lock.read_text(encoding="utf-8"))
    return latest is None or exported != exported_model_hash(
        file_at_revision(root, latest.revision, DVC_LOCK)
    )


def _stamp_and_track(root: Path, version: str, record_name: str) -> None:
    """release/model.onnx stamped with its lineage, and its .dvc file naming the version."""
    from mnistflow.core.atomic import atomic_file

    lock_text = (root / DVC_LOCK).read_text(encoding="utf-8")
    metadata = lineage.lineage_metadata(
        ARTIFACT,
        version,
        record_name,
        git(root, "rev-parse", "HEAD").strip(),
        lineage.code_changes(root, lineage.output_paths(lock_text)),
        lock_text,
    )
    lineage.stamp(root / ONNX_MODEL, root / REGISTERED_MODEL, metadata)
    with dvc_workspace(root) as repo, repo.scm_context(quiet=True, autostage=False):
        # quiet: no "git add release/model.onnx.dvc" hint; the file belongs to the record.
        repo.add(REGISTERED_MODEL)
    dvc_file = root / ARTIFACT_DVC_FILE
    tracked = yaml.safe_load(dvc_file.read_text(encoding="utf-8"))
    # Which version the record is for: read back when registering (or retrying to).
    tracked["meta"] = {"version": version, "record": record_name}
    with atomic_file(dvc_file) as temporary:
        temporary.write_text(yaml.safe_dump(tracked, sort_keys=False), encoding="utf-8")


def clear_release(root: Path) -> None:
    """Put the workspace's release/model.onnx(.dvc) back as HEAD has them: the stamped copy
    belongs to the record, not to the branch the user works on."""
    root = Path(root)
    if file_at_revision(root, "HEAD", ARTIFACT_DVC_FILE) is not None:
        git(root, "checkout", "HEAD", "--", ARTIFACT_DVC_FILE)
        try:
            with dvc_workspace(root) as repo:
                repo.checkout(ARTIFACT_DVC_FILE, force=True)
        except Exception as error:  # noqa: BLE001 - the record is made; say what is left
            logger.warning(
                "%s: not restored to HEAD's (%s); run `dvc pull`", REGISTERED_MODEL, error
            )
        return
    (root / ARTIFACT_DVC_FILE).unlink(missing_ok=True)
    (root / REGISTERED_MODEL).unlink(missing_ok=True)


def register_release(root: Path, record: RunRecord) -> ModelVersion | None:
    """Tag the record with the version its stamped model names, unless it already has it
    (then push the tag if a git remote lacks it: a registration the remote missed)."""

    dvc_file = file_at_revision(root, record.revision, ARTIFACT_DVC_FILE)
    if dvc_file is None:
        return None
    meta = yaml.safe_load(dvc_file).get("meta") or {}
    version = meta.get("version")
    if meta.get("record") != record.name or not version:
        return None  # an older release restored into the workspace, not this record's
    remote = git_remote(root)
    tag = f"{ARTIFACT}@{version}"
    tagged = git(root, "tag", "--list", tag).strip()
    if tagged:
        existing = git(root, "rev-parse", f"{tag}^{{commit}}").strip()
        if existing != record.revision:
            # Not fatal, or every later run would meet it again: the record stays recorded.
            logger.warning(
                "%s: %s is registered at %s already; %s (%s) was stamped with it and stays "
                "unregistered",
                ARTIFACT, version, existing[:7], record.name, record.revision[:7],
            )  # fmt: skip
            return None
        if remote:
            listed = git(root, "ls-remote", remote, f"refs/tags/{tag}^{{}}").split()
            if not listed:
                git(root, "push", "-q", remote, f"refs/tags/{tag}")
                return ModelVersion(version, record.revision)
            if listed[0] != record.revision:
                logger.warning("%s on %s points at %s, not %s", tag, remote, listed[0][:7],
                               record.revision[:7])  # fmt: skip
        return None
    gto.api.register(
        str(root),
        ARTIFACT,
        ref=record.revision,
        version=version,
        message=f"{ARTIFACT}: released by {record.name}",
        push=remote is not None,
    )
    registered = ModelVersion(version, record.revision)
    logger.info("registered %s %s (%s)", ARTIFACT, version, record.name)
    return registered


def resolve(root: Path, spec: str) -> ModelVersion:
    """`mnist-classifier:prod` (a stage) or `mnist-classifier@v0.2.0` (a version)."""
    from gto.exceptions import GTOException

    try:
        return _resolve(root, spec)
    except GTOException as error:
        raise PipelineInputError(f"{spec}: cannot read the registry of {root} ({error})") from None


def _resolve(root: Path, spec: str) -> ModelVersion:
    if "@" in spec:
        name, version = spec.split("@", 1)
        found = _versions(root).get(version) if name == ARTIFACT else None
    elif ":" in spec:
        name, stage = spec.split(":", 1)
        found = version_in_stage(root, stage) if name == ARTIFACT else None
    else:
        raise PipelineInputError(f"{spec!r}: expected {ARTIFACT}:STAGE or {ARTIFACT}@VERSION")
    if found is None:
        raise PipelineInputError(f"{spec}: no such model version in the registry of {root}")
    return found


def _shown(root: Path) -> list[dict]:
    """GTO's rows for the artifact's versions (none when nothing is registered)."""
    from gto.exceptions import ArtifactNotFound

    try:
        return gto.api.show(str(root), ARTIFACT, table=False)
    except ArtifactNotFound:
        return []


def versions_newest_first(root: Path) -> list[ModelVersion]:
    """Every registered version, the highest first."""
    from gto.versions import SemVer

    found = _versions(root)
    return [found[v] for v in sorted(found, key=lambda v: SemVer(v), reverse=True)]


def _versions(root: Path) -> dict[str, ModelVersion]:
    return {
        row["version"]: ModelVersion(row["version"], row["commit_hexsha"]) for row in _shown(root)
    }


def version_rows(root: Path) -> list[dict]:
    """Each version with its current stages, record commit and registration time."""
    return [
        {
            "version": row["version"],
            "stages": list(dict.fromkeys(a["stage"] for a in row.get("stages") or [])),
            "revision": row["commit_hexsha"],
            "created_at": str(row.get("created_at", "")),
        }
        for row in _shown(root)
    ]


def fetch_model(root: Path, version: ModelVersion, target: Path) -> Path:
    """The version's model bytes into `target` (from the DVC cache, else the DVC remote),
    refused unless the model's own metadata names that version."""
    import onnx

    path = _artifact_path(root, version.revision)
    try:
        model_bytes = bytes_at_revision(root, version.revision, path)
    except Exception as error:  # noqa: BLE001 - DVC raises many kinds; say which version
        raise PipelineInputError(
            f"{ARTIFACT} {version.version} ({version.revision[:7]}): {path} is in neither this "
            f"clone's DVC cache nor its remote ({type(error).__name__}: {error}); `dvc pull` "
            "from a remote that has it, or ask whoever registered it to push it"
        ) from None
    # The cache or remote that delivered the bytes is not what vouches for them: git does.
    expected = _recorded_md5(root, version.revision, path)
    if not matches(model_bytes, expected):
        actual = hashlib.md5(model_bytes).hexdigest()
        raise PipelineInputError(
            f"{ARTIFACT} {version.version} ({version.revision[:7]}): {path} has md5 {actual}, "
            f"but git records {expected or 'none'} for it at that revision; refusing to serve "
            "bytes the registry did not register"
        )
    stamped = metadata_of(onnx.load_from_string(model_bytes))
    # Versions registered before stamping point at the export stage's own, unstamped file.
    if path != ONNX_MODEL and stamped.get("model_version") != version.version:
        raise PipelineInputError(
            f"{ARTIFACT} {version.version} ({version.revision[:7]}): {REGISTERED_MODEL} names "
            f"version {stamped.get('model_version')!r}, expected {version.version!r}"
        )
    target.write_bytes(model_bytes)
    return target


def _recorded_md5(root: Path, revision: str, path: str) -> str | None:
    """The md5 git holds for `path` at `revision`: its .dvc file's, or the export stage's
    entry in dvc.lock (versions registered before stamping)."""
    if path == ONNX_MODEL:
        return exported_model_hash(file_at_revision(root, revision, DVC_LOCK))
    tracked = yaml.safe_load(file_at_revision(root, revision, f"{path}.dvc") or "") or {}
    outs = tracked.get("outs") or [{}]
    return outs[0].get("md5") if isinstance(outs[0], dict) else None


def served_model(root: Path) -> str:
    """What `served` names for predict and the inbox: the registry's prod version when one is
    assigned, else the workspace's own export (which serving refuses unless its gates
    released it). Never a file kept in place by a refused run: export writes its candidate."""
    if not (Path(root) / ".git").exists():  # not a git repository: there is no registry
        return ONNX_MODEL
    return f"{ARTIFACT}:{SERVED_STAGE}" if version_in_stage(root, SERVED_STAGE) else ONNX_MODEL


def _artifact_path(root: Path, revision: str) -> str:
    """The artifact's path as that revision's dvc.yaml declares it (as `dvc artifacts get`
    reads it)."""
    declared = yaml.safe_load(file_at_revision(root, revision, DVC_YAML) or "") or {}
    return ((declared.get("artifacts") or {}).get(ARTIFACT) or {}).get("path", REGISTERED_MODEL)


def fetch_to_folder(root: Path, spec: str, folder: Path) -> tuple[Path, str]:
    """(a verified copy in `folder`, which the caller owns, of the model `spec` names, its
    registry version)."""
    version = resolve(root, spec)
    return fetch_model(
        root, version, folder / f"{ARTIFACT}-{version.version}.onnx"
    ), version.version
