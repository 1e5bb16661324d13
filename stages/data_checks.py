"""Great Expectations checks for MNIST-like image data, on a per-image summary table.

GX is slow on wide tables (one column per pixel takes ~100 s for MNIST), so numpy first
reduces each image to a few numbers (mean intensity, ink fraction, max pixel, shape, dtype,
label, hash flags) and GX validates that narrow table. The same image-level checks serve
the training data (validate stage) and prediction inputs (`mnistflow validate`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CLASSES = tuple(range(10))


@dataclass(frozen=True)
class ValidateParams:
    """Bounds of the checks, MNIST's by default: a similar dataset needs new bounds only."""

    train_size: int = 60000
    test_size: int = 10000
    image_height: int = 28
    image_width: int = 28
    # Per image, in pixel units 0..255: MNIST spans 6.5..101 (mean), 0.04..0.45 (ink), 254..255
    # (max); blank, saturated, inverted and 0..1-scaled images fall far outside.
    min_mean_intensity: float = 3.0
    max_mean_intensity: float = 140.0
    min_ink_fraction: float = 0.02
    max_ink_fraction: float = 0.6
    min_max_pixel: int = 128
    # Each class's share of a split: MNIST spans 0.089..0.114.
    min_class_share: float = 0.05
    max_class_share: float = 0.15
    # Exact duplicates of training images in the test set (MNIST has none).
    max_train_test_duplicates: int = 0


@dataclass(frozen=True)
class CheckResult:
    name: str
    table: str
    column: str | None
    success: bool
    observed: Any
    bound: str
    unexpected_count: int | None = None

    def line(self) -> str:
        where = f"{self.table}.{self.column}" if self.column else self.table
        count = (
            f" ({self.unexpected_count} unexpected)" if self.unexpected_count is not None else ""
        )
        return f"{self.name} [{where}]: observed {self.observed}{count}; expected {self.bound}"


@dataclass(frozen=True)
class ValidationReport:
    results: list[CheckResult] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return all(result.success for result in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        return [result for result in self.results if not result.success]

    def as_json(self) -> dict[str, Any]:
        # A list, so `dvc metrics show` tabulates only the numbers above it, one row per file.
        return {
            "success": self.success,
            "checks_total": len(self.results),
            "checks_failed": len(self.failures),
            "expectations": [
                {
                    "name": result.name,
                    "table": result.table,
                    "column": result.column,
                    "success": result.success,
                    "observed": result.observed,
                    "expected": result.bound,
                }
                for result in self.results
            ],
        }


def image_hashes(images: np.ndarray) -> np.ndarray:
    rows = np.ascontiguousarray(images).reshape(len(images), -1)
    return np.array([hashlib.blake2b(row.tobytes(), digest_size=16).hexdigest() for row in rows])


def summarize_images(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image numbers in pixel units, vectorised; works on any dtype and any image shape."""
    count = len(images)
    flat = np.asarray(images).reshape(count, -1) if count else np.zeros((0, 0))
    height = images.shape[1] if images.ndim >= 2 else 1
    width = images.shape[2] if images.ndim >= 3 else 1
    return {
        "mean_intensity": flat.mean(axis=1, dtype=np.float64) if flat.size else np.zeros(count),
        "ink_fraction": (flat > 0).mean(axis=1) if flat.size else np.zeros(count),
        "max_pixel": flat.max(axis=1).astype(np.float64) if flat.size else np.zeros(count),
        "height": np.full(count, height),
        "width": np.full(count, width),
        "channels": np.full(count, int(np.prod(images.shape[3:])) if images.ndim > 3 else 1),
        "dtype": np.full(count, str(images.dtype)),
    }


def dataset_tables(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The tables GX validates for a labelled dataset: per-image summaries and class shares."""
    import pandas as pd

    hashes = {split: image_hashes(arrays[f"x_{split}"]) for split in ("train", "test")}
    labels = {split: np.asarray(arrays[f"y_{split}"]) for split in ("train", "test")}
    # An image (by content) seen with more than one label, in either split.
    pairs = pd.DataFrame(
        {
            "hash": np.concatenate([hashes["train"], hashes["test"]]),
            "label": np.concatenate([labels["train"], labels["test"]]),
        }
    )
    labels_per_hash = pairs.groupby("hash")["label"].nunique()
    conflicting = set(labels_per_hash.index[labels_per_hash > 1])

    tables: dict[str, Any] = {}
    for split in ("train", "test"):
        frame = pd.DataFrame(summarize_images(arrays[f"x_{split}"]))
        frame["label"] = labels[split] if len(labels[split]) == len(frame) else np.nan
        frame["label_conflict"] = np.isin(hashes[split], list(conflicting))
        if split == "test":
            frame["in_train"] = np.isin(hashes["test"], hashes["train"])
        tables[f"{split}_images"] = frame
        label_values = labels[split]
        counts = pd.Series(label_values).value_counts()
        tables[f"{split}_classes"] = pd.DataFrame(
            {
                "label": list(CLASSES),
                "share": [counts.get(c, 0) / max(len(label_values), 1) for c in CLASSES],
            }
        )
    return tables


def image_bounds(params: ValidateParams) -> list[tuple[str, str, float, float]]:
    """(check name, summary column, min, max) per image: the one definition of the bounds.

    GX validates them (`image_expectations`); batch prediction flags rows with them
    (`flag_images`) without a GX run per chunk.
    """
    return [
        ("image_height", "height", params.image_height, params.image_height),
        ("image_width", "width", params.image_width, params.image_width),
        ("single_channel", "channels", 1, 1),
        ("mean_intensity", "mean_intensity", params.min_mean_intensity, params.max_mean_intensity),
        ("ink_fraction", "ink_fraction", params.min_ink_fraction, params.max_ink_fraction),
        ("max_pixel", "max_pixel", params.min_max_pixel, 255),
    ]


def image_expectations(params: ValidateParams, check_dtype: bool = True) -> list[tuple[str, Any]]:
    """Checks on single images: what prediction inputs must pass too.

    Stored training data must be uint8; prediction inputs may also be float 0..1, which
    `prediction_input_table` brings to pixel units first, so a wrong scale still shows.
    """
    import great_expectations.expectations as gxe

    dtype_check = [
        ("dtype_uint8", gxe.ExpectColumnValuesToBeInSet(column="dtype", value_set=["uint8"]))
    ]
    return [
        *(dtype_check if check_dtype else []),
        *(
            (name, gxe.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high))
            for name, column, low, high in image_bounds(params)
        ),
    ]


def in_pixel_units(images: np.ndarray) -> np.ndarray:
    """uint8 as is; floats are taken as 0..1 and scaled to 0..255."""
    return images if images.dtype == np.uint8 else np.asarray(images, np.float64) * 255.0


def flag_images(images: np.ndarray, params: ValidateParams) -> list[str]:
    """Per image, the names of the image-level checks it fails, joined by ';' ('' if none)."""
    summary = summarize_images(in_pixel_units(images))
    failing = [
        (name, (summary[column] < low) | (summary[column] > high))
        for name, column, low, high in image_bounds(params)
    ]
    return [";".join(name for name, mask in failing if mask[row]) for row in range(len(images))]


def dataset_expectations(params: ValidateParams) -> dict[str, list[tuple[str, Any]]]:
    """Checks per table of `dataset_tables`."""
    import great_expectations.expectations as gxe

    def labelled(split: str, size: int) -> list[tuple[str, Any]]:
        checks = [
            ("split_size", gxe.ExpectTableRowCountToEqual(value=size)),
            *image_expectations(params),
            ("labels_not_null", gxe.ExpectColumnValuesToNotBeNull(column="label")),
            (
                "labels_in_class_set",
                gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(CLASSES)),
            ),
            (
                "every_class_present",
                gxe.ExpectColumnDistinctValuesToContainSet(column="label", value_set=list(CLASSES)),
            ),
            (
                "no_image_with_two_labels",
                gxe.ExpectColumnValuesToBeInSet(column="label_conflict", value_set=[False]),
            ),
        ]
        if split == "test":
            checks.append(
                (
                    "train_test_duplicates",
                    gxe.ExpectColumnSumToBeBetween(
                        column="in_train", min_value=0, max_value=params.max_train_test_duplicates
                    ),
                )
            )
        return checks

    def balance() -> list[tuple[str, Any]]:
        return [
            (
                "class_share",
                gxe.ExpectColumnValuesToBeBetween(
                    column="share",
                    min_value=params.min_class_share,
                    max_value=params.max_class_share,
                ),
            )
        ]

    return {
        "train_images": labelled("train", params.train_size),
        "test_images": labelled("test", params.test_size),
        "train_classes": balance(),
        "test_classes": balance(),
    }


def _bound(configuration: dict[str, Any]) -> str:
    kwargs = {k: v for k, v in configuration.items() if k not in ("column", "batch_id")}
    if "value_set" in kwargs:
        return f"values in {kwargs['value_set']}"
    if "value" in kwargs:
        return f"= {kwargs['value']}"
    if "min_value" in kwargs or "max_value" in kwargs:
        return f"between {kwargs.get('min_value')} and {kwargs.get('max_value')}"
    return "not null" if not kwargs else str(kwargs)


def _observed(result: dict[str, Any]) -> Any:
    if "observed_value" in result and result["observed_value"] is not None:
        value = result["observed_value"]
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, float):
            value = round(value, 6)
        return value
    if result.get("missing_count"):
        missing = [
            item.item() if isinstance(item, np.generic) else item
            for item in result.get("partial_missing_list") or []
        ]
        return {"missing": missing}
    if "unexpected_count" in result:
        partial = result.get("partial_unexpected_list") or []
        examples = [item.item() if isinstance(item, np.generic) else item for item in partial[:5]]
        return {"unexpected_count": int(result["unexpected_count"]), "examples": examples}
    return None


def run_checks(
    tables: dict[str, Any],
    expectations: dict[str, list[tuple[str, Any]]],
    data_docs_dir: Path | None = None,
) -> ValidationReport:
    """Validate each table with its suite in a GX ephemeral context; optionally write Data Docs."""
    # No network here, and none wanted: GX's usage statistics stay off.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    # One tqdm bar per validation is noise in pipeline logs.
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    if data_docs_dir is not None:
        context.add_data_docs_site(
            site_name="mnistflow",
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(Path(data_docs_dir).resolve()),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    source = context.data_sources.add_pandas("mnistflow")
    results: list[CheckResult] = []
    for table_name, checks in expectations.items():
        asset = source.add_dataframe_asset(name=table_name)
        batch_definition = asset.add_batch_definition_whole_dataframe(f"{table_name}_all")
        suite = context.suites.add(gx.ExpectationSuite(name=table_name))
        for check_name, expectation in checks:
            # A copy: an expectation object can belong to one suite only, and callers may reuse.
            suite.add_expectation(
                expectation.copy(update={"meta": {"check": check_name}, "id": None})
            )
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=table_name, data=batch_definition, suite=suite)
        )
        outcome = definition.run(
            batch_parameters={"dataframe": tables[table_name]},
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": 5},
        )
        for item in outcome.results:
            configuration = item.expectation_config
            results.append(
                CheckResult(
                    name=configuration.meta["check"],
                    table=table_name,
                    column=configuration.kwargs.get("column"),
                    success=bool(item.success),
                    observed=_observed(item.result),
                    bound=_bound(configuration.kwargs),
                    unexpected_count=item.result.get("unexpected_count"),
                )
            )
    if data_docs_dir is not None:
        context.build_data_docs(site_names=["mnistflow"])
    order = {
        (table, name): position
        for position, (table, name) in enumerate(
            (table, name) for table, checks in expectations.items() for name, _ in checks
        )
    }
    results.sort(key=lambda result: order[(result.table, result.name)])
    return ValidationReport(results)


def prediction_input_table(images: np.ndarray):
    """Per-image summary of a prediction batch, in pixel units 0..255 whatever its dtype."""
    import pandas as pd

    return pd.DataFrame(summarize_images(in_pixel_units(images)))


def validate_images(images: np.ndarray, params: ValidateParams) -> ValidationReport:
    """The image-level checks on a prediction batch; each result counts the failing images."""
    return run_checks(
        {"images": prediction_input_table(images)},
        {"images": image_expectations(params, check_dtype=False)},
    )
