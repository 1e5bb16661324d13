"""The validate bounds actually applied: params.yaml's numbers, else inferred from the reference.

TFDV's infer-schema idea: the accepted reference profile says what the data looked like, and a
bound is its observed range widened by `validate.bound_margin` (m): a minimum becomes
observed x (1 - m), a maximum observed x (1 + m), capped to what is possible (pixels 0..255,
fractions 0..1). With MNIST's profile and m = 0.5 that gives mean intensity 3.2..152, ink
fraction 0.022..0.67, brightest pixel >= 127 and class shares 0.045..0.17, close to the values
once written by hand. Sizes and image shape are the reference's own; near-duplicate counts
the reference's plus 0.1 % of the training split; the label-error rate the reference's own
estimate plus `validate.labels.allowance`. Without a reference (a prediction batch
outside any project), MNIST's built-in values below apply.

The bounds a validation report applied are read back from reports/validation.json by
`applied_bounds`: export embeds them in the ONNX model as `input_checks` (what `mnistflow
predict` flags inputs with), so the model carries the bounds its data was actually checked
against, inferred ones included, and serving needs neither the reference nor params.yaml.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnistflow.constants import IMAGE_SIZE, PIXEL_MAX
from mnistflow.errors import PipelineInputError
from mnistflow.params import DuplicateChecks, ValidateParams

if TYPE_CHECKING:  # a type only: the profile module itself builds on the summaries' bounds
    from mnistflow.reference.profile import Profile

# MNIST's bounds as once written by hand: what applies where no reference profile is known
# (a prediction batch outside any project, a model exported before bounds were inferred).
BUILT_IN = {
    "train_size": 60000,
    "test_size": 10000,
    "image_height": IMAGE_SIZE,
    "image_width": IMAGE_SIZE,
    "min_mean_intensity": 3.0,
    "max_mean_intensity": 140.0,
    "min_ink_fraction": 0.02,
    "max_ink_fraction": 0.6,
    "min_max_pixel": 128,
    "min_class_share": 0.05,
    "max_class_share": 0.15,
}
BUILT_IN_DUPLICATES = {"max_in_train": 60, "max_test_in_train": 0}


def bound(params, key: str):
    """params' value for `key`, or the built-in one where params leaves it null."""
    value = getattr(params, key)
    return BUILT_IN[key] if value is None else value


TRAIN_NEAR_DUPLICATE_ALLOWANCE = 0.001  # of the training split, on top of the reference's count


def inferred_bounds(profile: Profile, margin: float) -> dict[str, Any]:
    """Every inferable bound from a reference profile."""
    splits = profile.splits
    ranges = {
        name: (
            min(splits[split]["ranges"][name][0] for split in splits),
            max(splits[split]["ranges"][name][1] for split in splits),
        )
        for name in ("mean_intensity", "ink_fraction", "max_pixel")
    }
    shares = [share for split in splits.values() for share in split["class_shares"]]
    height, width = splits["train"]["image_shape"][:2]
    return {
        "train_size": splits["train"]["size"],
        "test_size": splits["test"]["size"],
        "image_height": height,
        "image_width": width,
        "min_mean_intensity": _round(ranges["mean_intensity"][0] * (1 - margin)),
        "max_mean_intensity": _round(min(PIXEL_MAX, ranges["mean_intensity"][1] * (1 + margin))),
        "min_ink_fraction": _round(ranges["ink_fraction"][0] * (1 - margin)),
        "max_ink_fraction": _round(min(1.0, ranges["ink_fraction"][1] * (1 + margin))),
        "min_max_pixel": int(math.floor(ranges["max_pixel"][0] * (1 - margin))),
        "min_class_share": _round(min(shares) * (1 - margin)),
        "max_class_share": _round(min(1.0, max(shares) * (1 + margin))),
    }


def inferred_duplicate_bounds(profile: Profile) -> dict[str, int]:
    train = profile.splits["train"]
    return {
        "max_in_train": int(train["near_duplicates"])
        + math.ceil(TRAIN_NEAR_DUPLICATE_ALLOWANCE * train["size"]),
        "max_test_in_train": int(profile.splits["test"]["near_duplicates_of_train"]),
    }


def resolve_bounds(
    params: ValidateParams, profile: Profile | None, reference_label_error_rate: float = 0.0
) -> tuple[ValidateParams, dict[str, str]]:
    """(params with every bound a number, where each came from: params/reference/built-in).
    `reference_label_error_rate`: the accepted data's own estimate (its worse split)."""
    inferred = inferred_bounds(profile, params.bound_margin) if profile else BUILT_IN
    origin_of_inferred = "reference" if profile else "built-in"
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for key, fallback in inferred.items():
        given = getattr(params, key)
        values[key] = given if given is not None else fallback
        origins[key] = "params" if given is not None else origin_of_inferred
    duplicates_inferred = inferred_duplicate_bounds(profile) if profile else BUILT_IN_DUPLICATES
    duplicate_values = {}
    for key, fallback in duplicates_inferred.items():
        given = getattr(params.duplicates, key)
        duplicate_values[key] = given if given is not None else fallback
        origins[f"duplicates.{key}"] = "params" if given is not None else origin_of_inferred
    duplicates = DuplicateChecks(max_distance=params.duplicates.max_distance, **duplicate_values)
    labels = params.labels
    if labels.max_error_rate is None:
        labels = labels.model_copy(
            update={"max_error_rate": _round(reference_label_error_rate + labels.allowance)}
        )
        origins["labels.max_error_rate"] = origin_of_inferred
    else:
        origins["labels.max_error_rate"] = "params"
    update = {**values, "duplicates": duplicates, "labels": labels}
    return params.model_copy(update=update), origins


def _round(value: float) -> float:
    return round(float(value), 6)


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


def image_bounds(params: ValidateParams) -> list[tuple[str, str, float, float]]:
    """(check name, summary column, min, max) per image: the one definition of the bounds.

    GX validates them (`image_expectations`); batch prediction flags rows with them
    (`flag_images`) without a GX run per chunk. Bounds params leaves null take MNIST's
    built-in values here; the validate stage resolves them from the reference first.
    """

    def value(key: str):
        return bound(params, key)

    return [
        ("image_height", "height", value("image_height"), value("image_height")),
        ("image_width", "width", value("image_width"), value("image_width")),
        ("single_channel", "channels", 1, 1),
        (
            "mean_intensity",
            "mean_intensity",
            value("min_mean_intensity"),
            value("max_mean_intensity"),
        ),
        ("ink_fraction", "ink_fraction", value("min_ink_fraction"), value("max_ink_fraction")),
        ("max_pixel", "max_pixel", value("min_max_pixel"), PIXEL_MAX),
    ]
