"""The accepted reference: the folder validate compares every dataset with.

`reference/` holds the profile (`profile.npz`, `profile.json`), the label model
(`label_model.onnx` or `label_model.npz`, see `mnistflow.reference.label_quality`) and
`reference.json`: which data it was accepted from (the raw file's md5, as dvc.lock records it,
and `data.source`) and which label model it holds. `reference.dvc` tracks the folder in DVC
(in git as well, `cache: false`, so a fresh clone has it without a remote); validate lists it
among its deps. Only `mnistflow reference accept` (`mnistflow.reference.acceptance`) changes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnistflow.errors import PipelineInputError
from mnistflow.reference.label_quality import label_model_kind, load_label_model
from mnistflow.reference.profile import Profile, load_profile

INFO_FILE = "reference.json"
ACCEPT_HINT = (
    "if this is the data you mean to train on, accept it as the new reference with "
    "`mnistflow reference accept`, then run `dvc repro` (or `mnistflow run`) again"
)


@dataclass
class Reference:
    folder: Path
    profile: Profile
    info: dict[str, Any]

    @property
    def data_md5(self) -> str | None:
        return self.info.get("data", {}).get("md5")

    @property
    def label_error_rate(self) -> float:
        """The label check's own estimate on the accepted data (its worse split); 0 if unknown."""
        rates = self.info.get("label_error_rate") or {}
        return max(rates.values(), default=0.0)

    def label_model(self):
        return load_label_model(self.folder)

    def label_model_kind(self) -> str | None:
        return label_model_kind(self.folder)


def load_reference(folder: Path) -> Reference:
    folder = Path(folder)
    if not (folder / INFO_FILE).is_file():
        raise PipelineInputError(
            f"{folder}: no accepted reference ({INFO_FILE} missing); accept the current data "
            "as the reference with `mnistflow reference accept`"
        )
    try:
        info = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise PipelineInputError(f"{folder / INFO_FILE}: not readable JSON ({error})") from None
    return Reference(folder=folder, profile=load_profile(folder), info=info)
