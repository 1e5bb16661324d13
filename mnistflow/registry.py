"""The model registry in DVC's own format: GTO git tags on recorded runs.

The exported model is declared under `artifacts:` in dvc.yaml. A recorded run whose gates
released a new model gets a version tag (`mnist-classifier@v0.2.0`, GTO's format) on its
experiment commit; `promote` assigns a stage (`mnist-classifier#prod#3`). Tags and commits
travel through the git remote, the weights through the DVC remote, so in any clone
`dvc artifacts get . mnist-classifier --stage prod` fetches the very bytes. GTO's own CLI
(`gto show`, `gto assign`) reads the same tags.

Promoting also writes the prod version's metrics to release/baseline.json, the quality gate's
declared input: the gate compares against what is served, not against git HEAD.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from mnistflow.errors import PipelineInputError
from mnistflow.records import RunRecord, file_at_revision, git_remote

logger = logging.getLogger(__name__)

ARTIFACT = "mnist-classifier"
ARTIFACT_PATH = "models/model.onnx"
EXPORT_REPORT = "reports/export.json"
METRICS = "reports/metrics.json"
BASELINE = Path("release") / "baseline.json"


@dataclass(frozen=True)
class ModelVersion:
    version: str
    revision: str


def latest_version(root: Path) -> ModelVersion | None:
    import gto.api
    from gto.exceptions import ArtifactNotFound

    try:
        found = gto.api.find_latest_version(str(root), ARTIFACT)
    except ArtifactNotFound:
        return None
    return ModelVersion(found.version, found.commit_hexsha) if found else None


def version_in_stage(root: Path, stage: str) -> ModelVersion | None:
    import gto.api
    from gto.exceptions import ArtifactNotFound

    try:
        found = gto.api.find_versions_in_stage(str(root), ARTIFACT, stage)
    except ArtifactNotFound:
        return None
    found = found[0] if isinstance(found, list) and found else found
    return ModelVersion(found.version, found.commit_hexsha) if found else None


def _model_hash(root: Path, revision: str) -> str | None:
    """The md5 dvc.lock records for the exported model at `revision`."""
    lock = file_at_revision(root, revision, "dvc.lock")
    if lock is None:
        return None
    for out in yaml.safe_load(lock)["stages"].get("export", {}).get("outs", []):
        if out["path"] == ARTIFACT_PATH:
            return out.get("md5")
    return None


def register_release(root: Path, record: RunRecord) -> ModelVersion | None:
    """Register the record's model as a new version if its gates released it and it differs
    from the latest registered one; None otherwise."""
    import gto.api

    report = file_at_revision(root, record.revision, EXPORT_REPORT)
    if report is None or not json.loads(report).get("released"):
        return None
    latest = latest_version(root)
    if latest and _model_hash(root, latest.revision) == _model_hash(root, record.revision):
        return None
    tag = gto.api.register(
        str(root),
        ARTIFACT,
        ref=record.revision,
        bump_minor=latest is not None,
        message=f"{ARTIFACT}: released by {record.name}",
        push=git_remote(root) is not None,
    )
    registered = ModelVersion(tag.version, record.revision)
    logger.info("registered %s %s (%s)", ARTIFACT, registered.version, record.name)
    return registered


def promote(root: Path, version: str, stage: str = "prod") -> ModelVersion:
    """Assign `stage` to `version`; for prod, its metrics become the quality gate's baseline."""
    import gto.api
    from gto.exceptions import GTOException

    try:
        gto.api.assign(
            str(root), ARTIFACT, stage, version=version, push=git_remote(root) is not None
        )
    except GTOException as error:
        raise PipelineInputError(f"{ARTIFACT} {version}: cannot assign {stage}: {error}") from None
    promoted = version_in_stage(root, stage)
    if promoted is None or promoted.version != version:
        raise PipelineInputError(f"{ARTIFACT} {version}: {stage} assignment not found after it")
    if stage == "prod":
        write_baseline(root, promoted)
    return promoted


def write_baseline(root: Path, version: ModelVersion) -> None:
    from mnistflow.serving.gates import Baseline

    metrics = file_at_revision(root, version.revision, METRICS)
    params = file_at_revision(root, version.revision, "params.yaml")
    if metrics is None or params is None:
        raise PipelineInputError(f"{ARTIFACT} {version.version}: no metrics recorded with it")
    model_name = (yaml.safe_load(params).get("model") or {}).get("name", "cnn")
    accuracy = json.loads(metrics)["accuracy"]
    Baseline(model_name, accuracy, f"{ARTIFACT} {version.version}").save(Path(root) / BASELINE)


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


def _versions(root: Path) -> dict[str, ModelVersion]:
    import gto.api
    from gto.exceptions import ArtifactNotFound

    try:
        artifact = gto.api.show(str(root), ARTIFACT, table=False)
    except ArtifactNotFound:
        return {}
    return {row["version"]: ModelVersion(row["version"], row["commit_hexsha"]) for row in artifact}


def fetch_model(root: Path, version: ModelVersion, target: Path) -> Path:
    """The version's model bytes into `target` (from the DVC cache, else the DVC remote)."""
    from dvc.repo import Repo

    with (
        Repo(str(root), rev=version.revision) as repo,
        repo.dvcfs.open(ARTIFACT_PATH, "rb") as source,
    ):
        target.write_bytes(source.read())
    return target


def fetch_to_temporary(root: Path, spec: str, folder: Path | None = None) -> tuple[Path, str]:
    """(a local copy of the model `spec` names, its registry version)."""
    version = resolve(root, spec)
    folder = folder or Path(tempfile.mkdtemp(prefix="mnistflow-model-"))
    return fetch_model(
        root, version, folder / f"{ARTIFACT}-{version.version}.onnx"
    ), version.version
