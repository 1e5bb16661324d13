"""The bounds a validation report applied, read back from reports/validation.json.

Export embeds them in the ONNX model as `input_checks` (what `mnistflow predict` flags inputs
with), so the model carries the bounds its data was actually checked against, inferred ones
included, and serving needs neither the reference nor params.yaml.
"""

from __future__ import annotations

import json
from pathlib import Path

from mnistflow.errors import PipelineInputError
from mnistflow.params import DuplicateChecks, ValidateParams


def applied_bounds(report: Path, params: ValidateParams) -> ValidateParams:
    """`params` with every bound set to the value the report at `report` applied."""
    try:
        entries = json.loads(Path(report).read_text(encoding="utf-8"))["bounds"]
        values = {entry["key"]: entry["value"] for entry in entries}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PipelineInputError(
            f"{report}: no applied bounds in it ({type(error).__name__}: {error}); run the "
            "validate stage first"
        ) from None
    duplicates = {
        key.split(".", 1)[1]: value
        for key, value in values.items()
        if key.startswith("duplicates.")
    }
    plain = {key: value for key, value in values.items() if "." not in key}
    try:
        return ValidateParams.model_validate(
            {
                **params.model_dump(),
                **plain,
                "duplicates": DuplicateChecks(
                    **{**params.duplicates.model_dump(), **duplicates}
                ).model_dump(),
            }
        )
    except ValueError as error:
        raise PipelineInputError(f"{report}: its bounds are not valid ({error})") from None
