"""An ONNX model's metadata_props, the contract and lineage a model carries: read as a dict,
and rewritten in one place (entries kept in order, then the new ones)."""

from __future__ import annotations

from collections.abc import Iterable


def metadata_of(model) -> dict[str, str]:
    """A ModelProto's metadata_props as a dict."""
    return {entry.key: entry.value for entry in model.metadata_props}


def replace_metadata(model, drop: Iterable[str], add: Iterable[tuple[str, str]]) -> None:
    """Remove the entries whose key is in `drop`, keep the rest in order, then append `add`."""
    dropped = set(drop)
    kept = [(entry.key, entry.value) for entry in model.metadata_props if entry.key not in dropped]
    del model.metadata_props[:]
    for key, value in [*kept, *add]:
        model.metadata_props.add(key=key, value=value)
