from __future__ import annotations

import pytest

from stages.errors import PipelineInputError
from stages.params import load_section, section_from_mapping
from stages.prepare import PrepareParams
from stages.train import TrainParams


def test_project_params_file_loads_every_section():
    from mnistflow import PROJECT_ROOT
    from stages.evaluate import EvaluateParams
    from stages.ingest import DataParams
    from stages.model import ModelParams

    path = PROJECT_ROOT / "params.yaml"
    for cls, section in [
        (DataParams, "data"),
        (PrepareParams, "prepare"),
        (ModelParams, "model"),
        (TrainParams, "train"),
        (EvaluateParams, "evaluate"),
    ]:
        assert isinstance(load_section(cls, section, path), cls)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"epochs": "ten"}, r"train.epochs: expected an integer, found 'ten'"),
        ({"epochs": 2.5}, r"train.epochs: expected an integer"),
        ({"optimizer": "adamw"}, r"train.optimizer: expected one of 'adam'"),
        ({"mixed_precision": "maybe"}, r"train.mixed_precision"),
        ({"epoch": 3}, r"unknown key\(s\) epoch"),
    ],
)
def test_bad_values_are_named(values, message):
    with pytest.raises(PipelineInputError, match=message):
        section_from_mapping(TrainParams, values, "train")


def test_toggles_accept_auto_and_booleans():
    assert section_from_mapping(TrainParams, {"xla": True}, "train").xla is True
    assert section_from_mapping(TrainParams, {"xla": "auto"}, "train").xla == "auto"
    uncapped = section_from_mapping(PrepareParams, {"max_train_images": None}, "prepare")
    assert uncapped.max_train_images is None


def test_missing_section(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("data: {}\n")
    with pytest.raises(PipelineInputError, match="section 'train' is missing"):
        load_section(TrainParams, "train", path)
