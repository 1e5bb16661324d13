"""What a registered model came from, written into its ONNX metadata when it is registered.

The export stage's models/model.onnx carries only what its declared inputs determine (params,
input checks, the sha256 of the Keras model and of the raw data), so a rerun is byte-identical.
The registry version, the record and the code revision exist only once a run is recorded, so
they go into a stamped copy made then (mnistflow/release/registry.py): the bytes a registry version
points at, which name themselves wherever they are copied.
"""

from __future__ import annotations

import json
from pathlib import Path

from mnistflow.core.atomic import atomic_file
from mnistflow.core.dvc_lock import lock_content, recorded_outputs
from mnistflow.core.git import git_or_none
from mnistflow.core.onnx_metadata import replace_metadata
from mnistflow.paths import DVC_LOCK

# dvc.lock stages whose outputs are the data a model was trained and tested on.
DATA_STAGES = ("ingest", "prepare")


def data_versions(lock_text: str) -> dict[str, str]:
    """{path: DVC hash} of the data source and the data stages' outputs, from dvc.lock: the
    same hashes `dvc data status` and `dvc exp show` print, so a version can be looked up."""
    stages = lock_content(lock_text).get("stages", {})
    versions: dict[str, str] = {}
    # ingest's one dependency that is not code is the source `data.source` names.
    ingest_deps = stages.get("ingest", {}).get("deps", [])
    sources = [dep for dep in ingest_deps if not dep["path"].endswith(".py")]
    outs = [out for name in DATA_STAGES for out in stages.get(name, {}).get("outs", [])]
    for entry in [*sources, *outs]:
        digest = entry.get("md5") or entry.get("etag") or entry.get("checksum")
        if digest:
            versions[entry["path"]] = digest
    return versions


def output_paths(lock_text: str) -> set[str]:
    """Every stage output dvc.lock lists, and dvc.lock itself: results, not code."""
    return {DVC_LOCK} | {path for _, path, _ in recorded_outputs(lock_text)}


def code_changes(root: Path, outputs: set[str]) -> list[str]:
    """Tracked files that differ from HEAD, other than `outputs` (and what lies inside them)."""
    listed = git_or_none(root, "diff", "--name-only", "-z", "HEAD")
    if listed is None:
        return []
    changed = [name for name in listed.split("\0") if name]
    return sorted(
        path
        for path in changed
        if not any(path == out or path.startswith(f"{out}/") for out in outputs)
    )


def lineage_metadata(
    artifact: str,
    version: str,
    record: str,
    code_revision: str,
    code_changes: list[str],
    lock_text: str,
) -> dict[str, str]:
    """The metadata_props a registered model gets on top of the export stage's contract."""
    return {
        "registry_artifact": artifact,
        # `mnistflow predict` reports this key in its model_version column.
        "model_version": version,
        "record": record,
        "code_revision": code_revision,
        # Tracked files that differed from code_revision when the run was recorded: the
        # record (a DVC experiment commit) holds them exactly.
        "code_changes": json.dumps(sorted(code_changes)),
        "data_versions": json.dumps(data_versions(lock_text), sort_keys=True),
    }


def stamp(source: Path, target: Path, metadata: dict[str, str]) -> None:
    """Copy the ONNX model `source` to `target` with `metadata` added to its metadata_props
    (an existing key is replaced); the graph is untouched."""
    import onnx

    model = onnx.load_model_from_string(Path(source).read_bytes())
    replace_metadata(model, drop=metadata, add=sorted(metadata.items()))
    with atomic_file(target) as temporary:
        temporary.write_bytes(model.SerializeToString())
