"""Save a Keras model so that the same weights give the same bytes (and one DVC hash)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

# A .keras file is a zip; Keras stamps the weights member with the current time,
# metadata.json with "date_saved", and config.json's "shared_object_id"s are Python id()s
# (memory addresses), so two saves of one model differ. All three are normalised.
_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def _renumber_shared_objects(config: object, numbering: dict[int, int]) -> object:
    """Replace each shared_object_id by its order of first appearance (links are kept)."""
    if isinstance(config, dict):
        return {
            key: numbering.setdefault(value, len(numbering))
            if key == "shared_object_id"
            else _renumber_shared_objects(value, numbering)
            for key, value in config.items()
        }
    if isinstance(config, list):
        return [_renumber_shared_objects(item, numbering) for item in config]
    return config


def save_model_reproducibly(model, path: Path) -> None:
    path = Path(path)
    staging = path.with_name(path.name + ".staging.keras")
    try:
        model.save(staging)
        with zipfile.ZipFile(staging) as source, zipfile.ZipFile(path, "w") as target:
            for member in sorted(source.infolist(), key=lambda info: info.filename):
                content = source.read(member)
                if member.filename == "metadata.json":
                    metadata = json.loads(content)
                    metadata.pop("date_saved", None)
                    content = json.dumps(metadata, sort_keys=True).encode()
                elif member.filename == "config.json":
                    config = _renumber_shared_objects(json.loads(content), {})
                    content = json.dumps(config).encode()
                normalised = zipfile.ZipInfo(member.filename, date_time=_FIXED_ZIP_TIME)
                normalised.compress_type = member.compress_type
                normalised.external_attr = 0o644 << 16
                target.writestr(normalised, content)
    finally:
        staging.unlink(missing_ok=True)
