"""Prepare's gate: only data the validate stage passed, and only the data it validated.

reports/validation.json names the md5 of the raw file it checked; prepare recomputes it, so a
report left from other data (a failed run, a copied file) never lets unchecked data through.
"""

from __future__ import annotations

import json
from pathlib import Path

from mnistflow.core.hashing import md5_of_file
from mnistflow.errors import PipelineInputError


def require_passed_validation(report: Path, raw: Path) -> None:
    """Refuse to prepare data that the validate stage did not pass: a failed report, or a
    report made for other data than `raw` (its md5 differs from the one the report names)."""
    try:
        content = json.loads(Path(report).read_text(encoding="utf-8"))
        passed = content["success"] is True
        validated_md5 = content["data"]["md5"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PipelineInputError(
            f"{report}: no readable validation result ({type(error).__name__}: {error}); "
            "run the validate stage first"
        ) from None
    if not passed:
        raise PipelineInputError(f"{report}: the raw data failed validation; not preparing it")
    actual_md5 = md5_of_file(raw)
    if validated_md5 != actual_md5:
        raise PipelineInputError(
            f"{report}: validated data md5 {validated_md5}, but {raw} has md5 {actual_md5}; "
            "the report is for other data: run the validate stage on this data first"
        )
