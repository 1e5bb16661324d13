"""A registered model's lineage: data hashes from dvc.lock, stamped into a copy of the ONNX."""

from __future__ import annotations

import json

import onnx
import yaml

from mnistflow.release.lineage import data_versions, lineage_metadata, stamp

LOCK = {
    "schema": "2.0",
    "stages": {
        "ingest": {
            "deps": [
                {"path": "stages/ingest.py", "md5": "c0de"},
                {"path": "/data/digits.npz", "md5": "50u2ce"},
            ],
            "outs": [{"path": "data/raw/mnist.npz", "md5": "2a3"}],
        },
        "prepare": {"outs": [{"path": "data/prepared", "md5": "9e9.dir"}]},
        "train": {"outs": [{"path": "models/model.keras", "md5": "ke2a5"}]},
    },
}


def test_data_versions_are_the_source_and_the_data_stages_outputs():
    assert data_versions(yaml.safe_dump(LOCK)) == {
        "/data/digits.npz": "50u2ce",
        "data/raw/mnist.npz": "2a3",
        "data/prepared": "9e9.dir",
    }
    assert data_versions("") == {}


def test_stamp_adds_lineage_and_leaves_the_graph(small_onnx_model, tmp_path):
    lineage = lineage_metadata(
        "mnist-classifier", "v0.2.0", "run-1", "abc123", ["params.yaml"], yaml.safe_dump(LOCK)
    )
    target = tmp_path / "release" / "model.onnx"
    stamp(small_onnx_model, target, lineage)
    original, stamped = onnx.load(str(small_onnx_model)), onnx.load(str(target))
    assert stamped.graph == original.graph
    metadata = {entry.key: entry.value for entry in stamped.metadata_props}
    assert metadata["model_version"] == "v0.2.0" and metadata["code_revision"] == "abc123"
    assert json.loads(metadata["code_changes"]) == ["params.yaml"]
    assert json.loads(metadata["data_versions"])["data/raw/mnist.npz"] == "2a3"
    for entry in original.metadata_props:  # the export's contract is kept
        assert metadata[entry.key] == entry.value
    # Stamping again replaces the lineage rather than adding a second entry.
    stamp(target, target, {**lineage, "model_version": "v0.3.0"})
    keys = [entry.key for entry in onnx.load(str(target)).metadata_props]
    assert keys.count("model_version") == 1
    assert {e.key: e.value for e in onnx.load(str(target)).metadata_props}[
        "model_version"
    ] == "v0.3.0"
