"""Great Expectations checks for MNIST-like image data, run on per-image summary tables.

The tables and bounds come from `mnistflow.validation.summaries`. The same image-level checks serve
the training data (validate stage) and prediction inputs (`mnistflow validate`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mnistflow.params import ValidateParams
from mnistflow.validation.bounds import image_bounds
from mnistflow.validation.summaries import CLASSES, dataset_tables, prediction_input_table

# No Great Expectations Data Docs: GX's site pages load bootstrap, jQuery, DataTables and Font
# Awesome from public CDNs and render empty offline, and vendoring those assets would mean
# patching GX's templates on every upgrade. Every expectation, its observed value and its
# bound go to reports/validation.json and the offline report (mnistflow/reporting/) instead.


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
    # Numbers for `dvc metrics show` (drift, label error rates, near-duplicates), placed
    # before the lists; and sections of details (bounds, per-scope drift, suspicious labels).
    metrics: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

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
            **self.metrics,
            **self.details,
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


def dataset_expectations(params: ValidateParams) -> dict[str, list[tuple[str, Any]]]:
    """Checks per table of `dataset_tables`."""
    import great_expectations.expectations as gxe

    def labelled(split: str) -> list[tuple[str, Any]]:
        checks = [
            # A minimum only: a dataset that grows is a new version, not a failure.
            (
                "split_size",
                gxe.ExpectTableRowCountToBeBetween(min_value=params.minimum_size(split)),
            ),
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
        "train_images": labelled("train"),
        "test_images": labelled("test"),
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


def _gx_context():
    """An ephemeral GX context, quiet and offline."""
    # No network here, and none wanted: GX's usage statistics stay off.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # That module sets its own logger to INFO on import, so the stage's WARNING level for
    # "great_expectations" misses it; it would announce an (unused) ephemeral docs folder.
    logging.getLogger(ProgressBarsConfig.__module__).setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    # One tqdm bar per validation is noise in pipeline logs.
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _column_range(table, column: str | None) -> list[float] | None:
    """[min, max] of a numeric column: what a per-image bound was checked against."""
    if column is None or column not in table or len(table) == 0:
        return None
    values = table[column].to_numpy()
    if values.dtype.kind not in "iuf" or np.isnan(values.astype(np.float64)).all():
        return None
    return [round(float(np.nanmin(values)), 6), round(float(np.nanmax(values)), 6)]


def _with_range(observed: Any, table, column: str | None) -> Any:
    value_range = _column_range(table, column)
    if isinstance(observed, dict) and "unexpected_count" in observed and value_range:
        return {**observed, "range": value_range}
    return observed


def _validate_table(context, source, table_name: str, table, checks) -> list[CheckResult]:
    """One table against its suite: one CheckResult per expectation, in GX's order."""
    import great_expectations as gx

    asset = source.add_dataframe_asset(name=table_name)
    batch_definition = asset.add_batch_definition_whole_dataframe(f"{table_name}_all")
    suite = context.suites.add(gx.ExpectationSuite(name=table_name))
    for check_name, expectation in checks:
        # A copy: an expectation object can belong to one suite only, and callers may reuse.
        suite.add_expectation(expectation.copy(update={"meta": {"check": check_name}, "id": None}))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=table_name, data=batch_definition, suite=suite)
    )
    outcome = definition.run(
        batch_parameters={"dataframe": table},
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": 5},
    )
    return [
        CheckResult(
            name=item.expectation_config.meta["check"],
            table=table_name,
            column=item.expectation_config.kwargs.get("column"),
            success=bool(item.success),
            observed=_with_range(
                _observed(item.result), table, item.expectation_config.kwargs.get("column")
            ),
            bound=_bound(item.expectation_config.kwargs),
            unexpected_count=item.result.get("unexpected_count"),
        )
        for item in outcome.results
    ]


def run_checks(
    tables: dict[str, Any], expectations: dict[str, list[tuple[str, Any]]]
) -> ValidationReport:
    """Validate each table with its suite in a GX ephemeral context.

    Results come in the order the expectations were listed, whatever order GX ran them in.
    """
    context = _gx_context()
    source = context.data_sources.add_pandas("mnistflow")
    results = [
        result
        for table_name, checks in expectations.items()
        for result in _validate_table(context, source, table_name, tables[table_name], checks)
    ]
    listed = [(table, name) for table, checks in expectations.items() for name, _ in checks]
    results.sort(key=lambda result: listed.index((result.table, result.name)))
    return ValidationReport(results)


def gx_dataset_checks(arrays: dict[str, np.ndarray], params: ValidateParams) -> ValidationReport:
    """The GX checks on a labelled dataset, as stored (keys of Keras' mnist.npz); `params`
    with its bounds resolved (`mnistflow.validation.bounds.resolve_bounds`)."""
    return run_checks(dataset_tables(arrays), dataset_expectations(params))


def validate_images(images: np.ndarray, params: ValidateParams) -> ValidationReport:
    """The image-level checks on a prediction batch; each result counts the failing images."""
    return run_checks(
        {"images": prediction_input_table(images)},
        {"images": image_expectations(params, check_dtype=False)},
    )
