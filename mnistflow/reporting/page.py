"""reports/report.html: one self-contained page a person can open offline.

Charts are inline SVG (charts.py), pictures are data: URIs, the style sheet is inline and
there is no script: nothing is loaded from outside the file. Jinja2 escapes every value
taken from the project (params, paths, messages).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mnistflow.core.atomic import atomic_file
from mnistflow.paths import HTML_REPORT, TRAIN_REPORT
from mnistflow.reporting.gather import ReportInputs

TEMPLATE = "report.html.j2"
# Section ids, in page order: a test checks each is present and filled.
SECTIONS = ("run", "data", "training", "evaluation", "release", "serving", "environment")


def number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    # Scientific only for tiny figures (parity differences), never for "0.09 s".
    return f"{value:.2e}" if 0 < abs(value) < 1e-4 else f"{value:.{digits}f}"


def signed(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:+.{digits}f}"


def observed(value: Any) -> str:
    """A validation result's observed value as one line."""
    if value is None:
        return "–"
    if isinstance(value, dict) and "unexpected_count" in value:
        parts = []
        if "range" in value:
            low, high = value["range"]
            parts.append(f"range {number(low, 3)} … {number(high, 3)}")
        parts.append(f"{number(value['unexpected_count'])} outside")
        if value.get("examples"):
            parts.append(f"e.g. {value['examples']}")
        return "; ".join(parts)
    if isinstance(value, dict) and "missing" in value:
        return f"missing {value['missing']}"
    if isinstance(value, dict) and "max" in value and "scope" in value:  # a drift measure
        over = f"; over in {', '.join(value['over'])}" if value.get("over") else ""
        return f"largest {number(value['max'], 4)} ({value['scope']}){over}"
    if isinstance(value, dict) and "estimated_error_rate" in value:  # label quality
        return (
            f"{number(value['estimated_error_rate'], 4)} ({number(value['estimated_errors'])} "
            f"estimated errors; most in class {value.get('worst_class')})"
        )
    if isinstance(value, dict) and ("pairs" in value or "images" in value):  # near-duplicates
        count = value.get("pairs", value.get("images"))
        examples = f"; e.g. {value['examples']}" if value.get("examples") else ""
        return f"{number(count)} {'pairs' if 'pairs' in value else 'images'}{examples}"
    return number(value, 6) if isinstance(value, float) else str(value)


def render(inputs: ReportInputs) -> str:
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("mnistflow.reporting", "templates"),
        autoescape=True,
        # A results file from an older or failed run may lack a field: shown empty, not fatal.
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(number=number, signed=signed, observed=observed)
    return environment.get_template(TEMPLATE).render(r=inputs, sections=SECTIONS)


def write_report(inputs: ReportInputs, target: Path) -> Path:
    with atomic_file(target) as temporary:
        temporary.write_text(render(inputs), encoding="utf-8")
    return target


def make_report(
    root: Path,
    stages: list[dict[str, Any]] | None = None,
    target: Path | None = None,
    fingerprint: str | None = None,
) -> tuple[Path, ReportInputs]:
    """Gather the project's results and write the report: (its path, what it shows)."""
    from mnistflow.reporting.gather import gather

    inputs = gather(Path(root), stages, fingerprint)
    return write_report(inputs, target or Path(root) / HTML_REPORT), inputs


def refresh_report(root: Path, stages: list[dict[str, Any]]) -> tuple[Path, dict[str, Any], bool]:
    """After a run: the report rebuilt unless the one there was built from the same inputs
    (reporting/freshness.py). (Its path, the run summary, whether it was rebuilt.)"""
    from mnistflow.core.json_files import read_json
    from mnistflow.reporting.freshness import recorded_fingerprint, report_fingerprint
    from mnistflow.reporting.gather import environment, gather_summary, parse_baseline_record
    from mnistflow.reporting.summary import summary_of

    root = Path(root)
    page = root / HTML_REPORT
    fingerprint = report_fingerprint(root, stages, environment(read_json(root / TRAIN_REPORT)))
    recorded = recorded_fingerprint(page) if fingerprint else None
    if recorded is not None and recorded.inputs == fingerprint:
        known = parse_baseline_record(recorded.baseline)
        if known is not None:
            return page, summary_of(gather_summary(root, known), page), False
    path, inputs = make_report(root, stages, fingerprint=fingerprint)
    return path, summary_of(inputs, path), True
