"""Accepting a dataset as the reference: `mnistflow reference accept`.

Builds the reference from the ingested raw data (data/raw/mnist.npz): its profile, a label
model, and reference.json naming the data (md5, as dvc.lock records it, and data.source).
The label model is the released model when it was trained on exactly this data (its
`inputs_sha256` names this raw file's sha256), else K cross-fitted MLPs. The folder is swapped
in whole, then `reference.dvc` is written with the data's md5 in its meta and committed with
`dvc commit`, so the new reference is one reviewable git change and validate re-runs on it.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mnistflow.constants import REFUSED_KEY
from mnistflow.core.atomic import atomic_directory, write_json
from mnistflow.core.dvc_cli import checked_dvc
from mnistflow.core.hashing import md5_of_file, sha256_of_file
from mnistflow.core.onnx_metadata import metadata_of
from mnistflow.data.sources import load_npz
from mnistflow.errors import PipelineInputError
from mnistflow.params import ValidateParams, load_validate_params
from mnistflow.paths import ONNX_MODEL, PARAMS, RAW_DATA, REFERENCE
from mnistflow.reference.folder import INFO_FILE
from mnistflow.reference.label_quality import LABEL_FOLD_MODELS, LABEL_ONNX_MODEL
from mnistflow.reference.profile import build_profile, save_profile
from mnistflow.serving.precision import int8_path_for, int8_problem

logger = logging.getLogger(__name__)

LabelModelChoice = Literal["auto", "released", "cross-validated"]
DVC_FILE_TEMPLATE = """\
# The accepted reference profile and label model (mnistflow/reference/folder.py); validate lists
# reference/ among its deps. cache: false keeps the files in git too, so a fresh clone has
# them without a DVC remote. Changed only by `mnistflow reference accept`.
outs:
- path: reference
  cache: false
meta:
  data_md5: {md5}
  data_source: {source}
"""


@dataclass(frozen=True)
class Accepted:
    folder: Path
    data_md5: str
    label_model: str
    images: int


def accept_reference(
    root: Path,
    label_model: LabelModelChoice = "auto",
    raw: Path = Path(RAW_DATA),
    source: str | None = None,
) -> Accepted:
    """Make `root`/reference the reference of the raw data at `root`/`raw`."""
    root = Path(root)
    raw_path = root / raw
    if not raw_path.is_file():
        raise PipelineInputError(
            f"{raw_path}: no ingested data to accept; run `dvc repro ingest` first"
        )
    # The same structural checks ingest applies: shapes, dtype, labels 0..9.
    arrays = load_npz(raw_path).as_npz_dict()
    data_md5 = md5_of_file(raw_path)
    released = _released_model_of(root / ONNX_MODEL, raw_path)
    if label_model == "released" and released is None:
        raise PipelineInputError(
            f"{root / ONNX_MODEL}: no released model trained on {raw_path} (md5 {data_md5}); "
            "use --label-model cross-validated, or run the pipeline first"
        )
    use_released = released is not None and label_model in ("auto", "released")
    logger.info("profiling %s (md5 %s)", raw_path, data_md5)
    # Near-duplicates counted at the distance validate will count them at: the bounds inferred
    # from these counts must mean the same thing there.
    params_file = root / PARAMS
    checks = load_validate_params(params_file) if params_file.is_file() else ValidateParams()
    bits = checks.duplicates.max_distance
    profile = build_profile(arrays, bits)
    folder = root / REFERENCE
    with atomic_directory(folder) as staging:
        save_profile(profile, staging)
        if use_released:
            shutil.copyfile(released, staging / LABEL_ONNX_MODEL)
            kind = "released model"
        else:
            from mnistflow.reference.label_model_fit import fit_fold_models

            logger.info("fitting the cross-validated label model")
            fit_fold_models(arrays["x_train"], arrays["y_train"]).save(staging / LABEL_FOLD_MODELS)
            kind = "cross-validated MLPs"
        label_error_rate = _own_label_error_rates(staging, arrays)
        write_json(
            staging / INFO_FILE,
            {
                "data": {"path": raw.as_posix(), "md5": data_md5, "source": source},
                "label_model": {
                    "kind": kind,
                    "file": LABEL_ONNX_MODEL if use_released else LABEL_FOLD_MODELS,
                    "released_model_sha256": sha256_of_file(released) if use_released else None,
                },
                "images": {split: profile.splits[split]["size"] for split in profile.splits},
                # The label check's estimate on this very data: the level later data is
                # judged against (validate.labels.allowance above it).
                "label_error_rate": label_error_rate,
            },
        )
    _track_in_dvc(root, data_md5, source)
    return Accepted(folder, data_md5, kind, sum(s["size"] for s in profile.splits.values()))


def _own_label_error_rates(folder: Path, arrays: dict) -> dict[str, float]:
    """Per split, the label check's estimated error rate on the accepted data itself."""
    from mnistflow.reference.label_quality import assess_labels, load_label_model

    model = load_label_model(folder)
    return {
        split: assess_labels(
            split, arrays[f"y_{split}"], model.probabilities(arrays[f"x_{split}"])
        ).error_rate
        for split in ("train", "test")
    }


def _released_model_of(model: Path, raw: Path) -> Path | None:
    """The served ONNX model (its int8 model where one pairs with it) when it was released and
    trained on exactly `raw`, else None."""
    if not model.is_file():
        return None
    try:
        import onnx

        metadata = metadata_of(onnx.load(str(model), load_external_data=False))
        inputs = json.loads(metadata.get("inputs_sha256", "{}"))
    except Exception as error:  # a damaged file: not a model to judge labels with
        logger.warning("%s: not usable as the label model (%s)", model, error)
        return None
    if REFUSED_KEY in metadata or inputs.get("raw_data") != sha256_of_file(raw):
        return None
    # Its int8 model, where one was released beside it, judges labels as well (the int8 gate
    # bounds its accuracy) at a quarter of the size and twice the speed.
    int8 = int8_path_for(model)
    return model if int8_problem(model, int8) else int8


def _track_in_dvc(root: Path, data_md5: str, source: str | None) -> None:
    """Write reference.dvc and record the folder's hash in it (no-op outside a DVC project)."""
    if not (root / ".dvc").is_dir():
        return
    dvc_file = root / "reference.dvc"
    dvc_file.write_text(
        DVC_FILE_TEMPLATE.format(md5=data_md5, source=json.dumps(source)), encoding="utf-8"
    )
    checked_dvc(root, "commit", "--force", "--quiet", "reference.dvc")
