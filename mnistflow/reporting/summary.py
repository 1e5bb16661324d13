"""The few lines `mnistflow run` ends with: stages, the test metrics with their change, the
gates' verdict, the record, and where the report is. At most 100 columns wide."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mnistflow.reporting.gather import ReportInputs, SummaryInputs

WIDTH = 100


def summary_of(inputs: ReportInputs | SummaryInputs, report: Path) -> dict[str, Any]:
    """What the summary and the Prefect artifacts show, as plain JSON-able values."""
    validation = inputs.validation or {}
    export = inputs.export or {}
    total, failed = validation.get("checks_total"), validation.get("checks_failed")
    return {
        "report": str(report),
        "baseline": inputs.baseline.label if inputs.baseline else None,
        "metrics": [
            {"metric": row.name, "value": row.value, "baseline": row.baseline, "change": row.change}
            for row in inputs.metrics
        ],
        "validation": (
            f"{total - failed} of {total} checks passed"
            if isinstance(total, int) and isinstance(failed, int)
            else "not run"
        ),
        "verdict": export.get("verdict", "not exported"),
        "released": bool(export.get("released")),
        "accuracy": accuracy_line(export.get("quality")),
    }


def accuracy_line(quality: Any) -> str:
    """The test accuracy with its interval, and the paired comparison with the baseline (a
    field of the wrong kind in reports/export.json gives "not readable", never a crash)."""
    try:
        return _accuracy_line(quality)
    except (KeyError, TypeError, ValueError):
        return "not readable in reports/export.json"


def _accuracy_line(quality: Any) -> str:
    if not isinstance(quality, dict) or "accuracy" not in quality:
        return "not measured"
    line = (
        f"{quality['accuracy']:.4f} [{quality['accuracy_low']:.4f}, "
        f"{quality['accuracy_high']:.4f}] ({quality['confidence'] * 100:g} % interval, "
        f"{int(quality['test_images'])} images)"
    )
    compared = quality.get("baseline")
    if not isinstance(compared, dict):
        return line
    if compared.get("test") == "mcnemar_exact":
        low, high = compared["difference_interval"]
        return (
            f"{line}; vs baseline {compared['difference']:+.4f} [{low:+.4f}, {high:+.4f}], "
            f"{int(compared['baseline_only_correct'])}/{int(compared['candidate_only_correct'])} "
            f"images only it/only this run gets right, p={compared['p_value_worse']:.2g}"
        )
    return (
        f"{line}; vs baseline {compared['difference']:+.4f} "
        f"(unpaired, p={compared['p_value_worse']:.2g})"
    )


def unavailable_summary() -> dict[str, Any]:
    """What the summary shows when the report could not be made (the log says why)."""
    return {
        "report": "not written (see the log)",
        "baseline": None,
        "metrics": [],
        "validation": "see reports/validation.json",
        "verdict": "see reports/export.json",
        "released": False,
        "accuracy": "see reports/export.json",
    }


def record_line(record: dict[str, Any] | None) -> str:
    """The training flow's record (see flows/pipeline.py record_and_register) in words."""
    from mnistflow.release.registry import ARTIFACT

    if not record:
        return "nothing new (no output changed)"
    experiment = f"experiment {record['experiment']} ({record['revision'][:7]})"
    if not record.get("published", True):
        return (
            f"{experiment}, in this repository only; not published (this clone does not "
            "publish: README, Who publishes)"
        )
    pushed = ", ".join(record["pushed_to"]) or "nowhere (no remotes)"
    version = record["version"]
    registered = f"registered as {ARTIFACT} {version}" if version else "no new model version"
    return f"{experiment}, pushed to {pushed}; {registered}"


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def print_summary(
    stages: list[dict[str, Any]], summary: dict[str, Any], record: str, console=None
) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console(width=min(Console().width, WIDTH))
    ran = Table(title="Stages", title_justify="left", box=None, pad_edge=False)
    ran.add_column("stage")
    ran.add_column("outcome")
    ran.add_column("seconds", justify="right")
    for stage in stages:
        outcome = "[green]ran[/]" if stage["ran"] else "[dim]up to date[/]"
        ran.add_row(escape(stage["stage"]), outcome, f"{stage['seconds']:.1f}")
    baseline = summary["baseline"] or "no baseline"
    metrics = Table(title=f"Test metrics (vs {escape(baseline)})", title_justify="left",
                    box=None, pad_edge=False)  # fmt: skip
    for column in ("metric", "this run", "baseline", "change"):
        metrics.add_column(column, justify="left" if column == "metric" else "right")
    for row in summary["metrics"]:
        metrics.add_row(
            row["metric"],
            _number(row["value"]),
            _number(row["baseline"]),
            _number(row["change"], signed=True),
        )
    console.print(ran)
    console.print()
    console.print(metrics)
    console.print()
    colour = "green" if summary["released"] else "yellow"
    # Values are escaped: a path or a verdict holding "[...]" is text, not rich markup.
    console.print(f"[bold]validation[/] {escape(summary['validation'])}", highlight=False)
    console.print(f"[bold]test accuracy[/] {escape(summary['accuracy'])}", highlight=False)
    console.print(f"[bold]gates[/] [{colour}]{escape(summary['verdict'])}[/]", highlight=False)
    console.print(f"[bold]record[/] {escape(record)}", highlight=False)
    console.print(f"[bold]report[/] {escape(summary['report'])}", highlight=False)
