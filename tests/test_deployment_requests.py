"""A deployment run is an untrusted request: only bounded training keys get through."""

from __future__ import annotations

import pytest

from mnistflow.errors import PipelineInputError
from mnistflow.orchestration.deployment_requests import allowed_keys, checked_deployment_request


def test_bounded_training_overrides_pass():
    request = checked_deployment_request({"train.epochs": 3, "model.name": "mlp"}, "quick-check_1")
    assert request.overrides == {"train.epochs": 3, "model.name": "mlp"}
    assert request.experiment_name == "quick-check_1"
    assert checked_deployment_request(None, None).overrides == {}


@pytest.mark.parametrize(
    "overrides",
    [
        # What reads, deserialises or executes: the data, its hash, paths, kernels, gates.
        {"data.source": "/tmp/evil.pkl.gz", "data.sha256": "0" * 64},
        {"data.sha256": "0" * 64},
        {"compute.cpu_isa": "native"},
        {"export.allow_regression": True},
        {"validate.max_error_rate": 1.0},
        {"train.checkpoints": "/etc"},
        # Absurd numbers.
        {"train.epochs": 100000},
        {"train.epochs": 0},
        {"train.batch_size": 10**9},
        {"train.epochs": True},
        {"train.epochs": "12"},
        {"train.epochs": None},
        {"model.name": "__import__('os')"},
        # Shapes that are not dotted keys.
        {"train": {"epochs": 3}},
        {"train.lr_schedule.name": "step"},
    ],
)
def test_everything_else_is_refused_naming_the_key(overrides):
    with pytest.raises(PipelineInputError) as caught:
        checked_deployment_request(overrides, None)
    message = str(caught.value)
    assert "deployment parameters refused" in message
    assert next(iter(overrides)) in message or "train" in message
    assert "train.epochs" in message  # the allowed keys are listed


def test_non_mappings_and_bad_names_are_refused():
    with pytest.raises(PipelineInputError, match="expected a mapping"):
        checked_deployment_request(["train.epochs=3"], None)
    for name in ("../../refs/heads/main", "a" * 65, "-x", "name with space", 7):
        with pytest.raises(PipelineInputError, match="experiment_name"):
            checked_deployment_request({}, name)


def test_the_allowed_keys_hold_nothing_that_reads_or_runs():
    keys = allowed_keys()
    assert "train.epochs" in keys and "model.name" in keys
    assert not [key for key in keys if key.split(".")[0] in ("data", "compute", "export")]


def test_a_request_is_bounded_in_work_not_only_key_by_key():
    from mnistflow.orchestration.deployment_requests import (
        MAX_TRAINING_IMAGES,
        MAX_TRAINING_STEPS,
        training_work,
    )
    from mnistflow.params import load_params
    from tests.project_root import PROJECT_ROOT

    committed = load_params(PROJECT_ROOT / "params.yaml")
    # The committed recipe passes untouched (5 epochs of 54,000 images at batch 128), and so
    # does 4× the recipe before it (12 epochs at batch 32), the budget's unit.
    images, steps = training_work({}, committed)
    assert (images, steps) == (270_000, 2_110)
    previous = {"train": {"epochs": 12, "batch_size": 32}}
    assert training_work(previous, committed) == (648_000, 20_256)
    assert (MAX_TRAINING_IMAGES, MAX_TRAINING_STEPS) == (4 * 648_000, 4 * 20_256)
    checked_deployment_request({}, None, committed)
    checked_deployment_request({"train.epochs": 48, "train.batch_size": 32}, None, committed)
    with pytest.raises(PipelineInputError, match="optimiser steps"):
        checked_deployment_request({"train.epochs": 49, "train.batch_size": 32}, None, committed)
    # Each key within its own range, together days: too many steps, or too many images.
    with pytest.raises(PipelineInputError, match="optimiser steps") as caught:
        checked_deployment_request({"train.epochs": 100, "train.batch_size": 8}, None, committed)
    assert "675,000" in str(caught.value)
    with pytest.raises(PipelineInputError, match="images seen") as caught:
        checked_deployment_request({"train.epochs": 100, "train.batch_size": 68}, None, committed)
    assert "5,400,000" in str(caught.value)
    # A smaller training split makes the same epochs affordable.
    checked_deployment_request(
        {"train.epochs": 100, "train.batch_size": 8, "prepare.max_train_images": 1000},
        None,
        committed,
    )
