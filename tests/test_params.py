"""The params schema: every section loads, and bad values are refused with the key named."""

from __future__ import annotations

import pytest

from mnistflow.errors import PipelineInputError
from mnistflow.params import Params, TrainParams, load_params, parse_params
from tests.project_root import PROJECT_ROOT


def test_project_params_file_loads_every_section():
    params = load_params(PROJECT_ROOT / "params.yaml")
    assert isinstance(params, Params)
    # The default recipe (issue 27): the tutorial CNN, 5 epochs at batch 128, one-cycle, shifts.
    assert params.train.epochs == 5 and params.model.name == "cnn"
    assert params.train.batch_size == 128 and params.train.lr_schedule.name == "one_cycle"
    assert params.train.augmentation.enabled and params.train.augmentation.max_rotation == 0.0
    # The `validate` section: bounds left null are inferred from the reference.
    assert params.checks.train_size is None and params.checks.drift.max_mean_image == 0.15
    assert params.prepare.normalization == "scale"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"epochs": "ten"}, r"train\.epochs: expected an integer, found 'ten'"),
        ({"epochs": 2.5}, r"train\.epochs: expected an integer"),
        ({"epochs": 0}, r"train\.epochs: expected greater than 0"),
        ({"optimizer": "adamw"}, r"train\.optimizer: expected one of 'adam'"),
        ({"mixed_precision": "maybe"}, r"train\.mixed_precision"),
        ({"xla": 1}, r"train\.xla: expected true or false, found 1"),
        ({"epoch": 3}, r"train\.epoch: unknown key; expected one of: optimizer"),
        ({"early_stopping": {"patiense": 2}}, r"train\.early_stopping\.patiense: unknown key"),
    ],
)
def test_bad_values_are_named(values, message):
    with pytest.raises(PipelineInputError, match=message):
        parse_params({"train": values})


def test_every_problem_is_listed_at_once():
    with pytest.raises(PipelineInputError) as caught:
        parse_params({"train": {"epochs": "x"}, "evaluate": {"batch_size": -1}, "bogus": {}})
    message = str(caught.value)
    assert "train.epochs" in message and "evaluate.batch_size" in message
    assert "bogus: unknown key; expected one of: data, compute, validate, prepare" in message


def test_cross_field_rules():
    with pytest.raises(PipelineInputError, match=r"model\.mlp: hidden_units \[12, 8\].*same"):
        parse_params({"model": {"mlp": {"hidden_units": [12, 8]}}})
    with pytest.raises(PipelineInputError, match="validate: min_ink_fraction 0.5 exceeds"):
        parse_params({"validate": {"min_ink_fraction": 0.5, "max_ink_fraction": 0.1}})


def test_toggles_accept_auto_and_booleans():
    assert parse_params({"train": {"xla": True}}).train.xla is True
    assert parse_params({"train": {"xla": "auto"}}).train.xla == "auto"
    assert parse_params({"prepare": {"max_train_images": None}}).prepare.max_train_images is None
    # In code, tuples stand for lists; files are checked strictly.
    assert TrainParams(metrics=("accuracy",)).metrics == ["accuracy"]


def test_missing_sections_take_defaults_and_bad_files_are_named(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("data: {}\n")
    assert load_params(path).train == TrainParams()
    path.write_text("- a list\n")
    with pytest.raises(PipelineInputError, match="expected a mapping of sections"):
        load_params(path)
    with pytest.raises(PipelineInputError, match="params file not found"):
        load_params(tmp_path / "absent.yaml")


def test_floats_dvc_writes_without_a_dot_are_numbers(tmp_path):
    """`dvc exp run -S train.lr_schedule.min_learning_rate=0.00001` writes `1e-05` (YAML
    1.2); PyYAML's YAML 1.1 would read it as a string."""
    from mnistflow.params import load_params

    path = tmp_path / "params.yaml"
    path.write_text("train:\n  lr_schedule:\n    min_learning_rate: 1e-05\n  seed: 42\n")
    params = load_params(path)
    assert params.train.lr_schedule.min_learning_rate == 1e-05 and params.train.seed == 42
