"""What a Prefect API caller may ask of a deployed pipeline run: an untrusted request, checked.

Anyone who can reach the Prefect API can start a deployment with parameters of their choosing.
So a deployed run takes only training choices, each within bounds; nothing a caller passes
may change what is read, deserialised or executed:

- no `data.*` (a source is a file or URL the worker would read, and a pickle's hash given by
  the same caller as the pickle proves nothing), no `validate.*`, `compute.*`, `export.*`
  (the data checks, the kernels and the release gates are the project's, in git);
- no paths and no project root: the worker's own clone is the project;
- numbers bounded, so a request cannot occupy the worker for days or exhaust memory: each
  key has a range, and together they may ask for at most 4× the committed recipe's work, in
  images seen (epochs × training images) and in optimiser steps (epochs × batches), the
  committed params filling in what the request leaves;
- an experiment name from a plain alphabet (it becomes a git ref).

Anything else is refused with a message naming the key and what is allowed. A pydantic model
rather than hand-written checks: the same strict, key-named errors as params.yaml's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mnistflow.errors import PipelineInputError
from mnistflow.params import ModelName, Params

# The most work a request may ask for: 4× the recipe committed before issue 27 (12 epochs of
# 54,000 images in 1,688 batches: 648,000 images seen, 20,256 steps, about 9 minutes of the
# CNN on the 2-core CI host), so about 40 minutes there; the default now (5 epochs at batch
# 128: 270,000 images, 2,110 steps) is under a tenth of it. Both count: images bound the
# arithmetic, steps the per-batch overhead of small batches. Each key's own range alone would
# allow 100 epochs at batch 8 (675,000 steps) or at batch 68 (5.4 M images): days of the worker.
MAX_TRAINING_IMAGES = 4 * 648_000
MAX_TRAINING_STEPS = 4 * 20_256
# The images an epoch covers when the request and params cap nothing: MNIST's training split.
MNIST_TRAIN_IMAGES = 60_000

# The override keys a deployment run accepts, as dotted params.yaml keys, with their bounds.
# Extending it is a code change, reviewed like one.


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class _ModelOverrides(_Request):
    name: ModelName | None = None


class _TrainOverrides(_Request):
    epochs: int | None = Field(None, ge=1, le=100)
    batch_size: int | None = Field(None, ge=8, le=4096)
    learning_rate: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    optimizer: Literal["adam", "sgd", "rmsprop", "adadelta"] | None = None


class _PrepareOverrides(_Request):
    # Fewer images for a quick check; never more than the data has (the stage refuses that).
    max_train_images: int | None = Field(None, ge=100, le=10_000_000)
    max_test_images: int | None = Field(None, ge=100, le=10_000_000)


class _Overrides(_Request):
    model: _ModelOverrides = Field(default_factory=_ModelOverrides)
    train: _TrainOverrides = Field(default_factory=_TrainOverrides)
    prepare: _PrepareOverrides = Field(default_factory=_PrepareOverrides)


class _Name(_Request):
    experiment_name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class DeploymentRequest:
    overrides: dict[str, Any]
    experiment_name: str | None


def allowed_keys() -> list[str]:
    """The dotted keys a deployment run may override."""
    return [
        f"{section}.{key}"
        for section, field in _Overrides.model_fields.items()
        for key in field.annotation.model_fields  # type: ignore[union-attr]
    ]


def training_work(nested: dict[str, dict[str, Any]], committed: Params) -> tuple[int, int]:
    """(images seen, optimiser steps) the request asks for, the committed params filling in
    the rest."""
    train, prepare = nested.get("train", {}), nested.get("prepare", {})
    epochs = train.get("epochs", committed.train.epochs)
    batch_size = train.get("batch_size", committed.train.batch_size)
    images = prepare.get("max_train_images", committed.prepare.max_train_images)
    images = min(images or MNIST_TRAIN_IMAGES, MNIST_TRAIN_IMAGES)
    fitted = math.ceil(images * (1 - committed.prepare.validation_fraction))
    return epochs * fitted, epochs * math.ceil(fitted / batch_size)


def _work_problems(images: int, steps: int) -> list[str]:
    problems = []
    if images > MAX_TRAINING_IMAGES:
        problems.append(
            f"train.epochs × training images: {images:,} images seen; a deployment run may ask "
            f"for at most {MAX_TRAINING_IMAGES:,} (fewer epochs or a smaller "
            "prepare.max_train_images)"
        )
    if steps > MAX_TRAINING_STEPS:
        problems.append(
            f"train.epochs × batches per epoch: {steps:,} optimiser steps; a deployment run "
            f"may ask for at most {MAX_TRAINING_STEPS:,} (fewer epochs, a larger "
            "train.batch_size or a smaller prepare.max_train_images)"
        )
    return problems


def checked_deployment_request(
    overrides: Any, experiment_name: Any, committed: Params | None = None
) -> DeploymentRequest:
    """The request's overrides as flat `section.key` params, or a PipelineInputError that says
    which key is refused and what is allowed. With the project's `committed` params, the
    request's whole training run is bounded too (MAX_TRAINING_IMAGES, MAX_TRAINING_STEPS)."""
    if overrides is None:
        overrides = {}
    if not isinstance(overrides, dict):
        raise PipelineInputError(
            f"parameter overrides: expected a mapping of params keys to values, found "
            f"{type(overrides).__name__}; refused"
        )
    nested: dict[str, dict[str, Any]] = {}
    problems = []
    for key, value in overrides.items():
        section, _, name = str(key).partition(".")
        if not isinstance(key, str) or not name or "." in name:
            problems.append(f"{key!r}: not one of the keys a deployment run may override")
            continue
        if value is None:
            problems.append(f"{key}: expected a value, found null")
            continue
        nested.setdefault(section, {})[name] = value
    try:
        _Overrides.model_validate(nested)
    except ValidationError as error:
        for item in error.errors():
            key = ".".join(str(part) for part in item["loc"][:2])
            if item["type"] == "extra_forbidden":
                problems.append(f"{key}: not one of the keys a deployment run may override")
            else:
                problems.append(f"{key}: {item['msg']}, found {item.get('input')!r}")
    if not problems and committed is not None:
        problems.extend(_work_problems(*training_work(nested, committed)))
    try:
        _Name.model_validate({"experiment_name": experiment_name})
    except ValidationError:
        problems.append(
            f"experiment_name {experiment_name!r}: expected letters, digits, '-' or '_' "
            "(at most 64, starting with a letter or digit)"
        )
    if problems:
        lines = "\n".join(f"  - {problem}" for problem in problems)
        raise PipelineInputError(
            f"deployment parameters refused:\n{lines}\n"
            f"a deployment run may override only: {', '.join(allowed_keys())}"
        )
    return DeploymentRequest(dict(overrides), experiment_name)
