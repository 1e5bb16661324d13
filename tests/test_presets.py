from __future__ import annotations

import copy

import pytest
import yaml

from mnistflow.errors import PipelineInputError
from mnistflow.params import parse_params, read_params_file
from mnistflow.paths import PRESETS as PRESETS_FILE
from mnistflow.training.presets import format_value, load_presets, preset_overrides
from tests.project_root import PROJECT_ROOT

PRESETS = PROJECT_ROOT / PRESETS_FILE


def apply(params: dict, overrides: dict) -> dict:
    """What `dvc exp run -S key=value ...` does to params.yaml."""
    result = copy.deepcopy(params)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = result
        for key in parents:
            assert key in node, f"{dotted}: {key!r} is not in params.yaml"
            node = node[key]
        assert leaf in node, f"{dotted}: {leaf!r} is not in params.yaml"
        node[leaf] = value
    return result


def test_the_tutorial_presets_are_shipped():
    presets = load_presets(PRESETS)
    assert {"tutorial-cnn", "tutorial-mlp-sigmoid", "tutorial-mlp-12-8", "tutorial-softmax"} <= set(
        presets
    )
    cnn = presets["tutorial-cnn"].params
    assert cnn["train.optimizer"] == "adadelta" and cnn["train.learning_rate"] == 1.0
    mlp = presets["tutorial-mlp-sigmoid"].params
    assert mlp["model.mlp.hidden_units"] == [100] and mlp["train.batch_size"] == 100
    assert presets["tutorial-softmax"].params["train.batch_size"] == 128


@pytest.mark.parametrize("name", sorted(load_presets(PRESETS)))
def test_every_preset_is_valid_params(name):
    params = apply(read_params_file(PROJECT_ROOT / "params.yaml"), preset_overrides(PRESETS, name))
    # The whole file as the stages load it: types, unknown keys and cross-field rules ...
    parsed = parse_params(params)
    # ... and every override lands where the stages read it.
    for dotted, value in preset_overrides(PRESETS, name).items():
        node = parsed
        for key in dotted.split("."):
            node = getattr(node, "checks" if key == "validate" else key)
        assert node == value, dotted


def test_dvc_command_quotes_lists_as_yaml():
    preset = load_presets(PRESETS)["tutorial-mlp-12-8"]
    command = preset.dvc_command()
    assert command.startswith("dvc exp run ")
    assert "-S 'model.mlp.hidden_units=[12, 8]'" in command
    assert format_value("sgd") == "sgd" and format_value(True) == "true"
    # YAML 1.1 needs a dot before the exponent to read a float back as a number.
    assert format_value(1e-05) == "1.0e-05" and yaml.safe_load(format_value(1e-05)) == 1e-05
    assert format_value(0.003) == "0.003"


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(PipelineInputError, match="no preset 'resnet'.*tutorial-cnn"):
        preset_overrides(PRESETS, "resnet")


def test_malformed_presets_file_is_named(tmp_path):
    bad = tmp_path / "presets.yaml"
    bad.write_text("fast:\n  description: no params\n")
    with pytest.raises(PipelineInputError, match="preset 'fast' needs a 'params' mapping"):
        load_presets(bad)
