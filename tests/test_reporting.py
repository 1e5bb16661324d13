"""The report's pieces: the offline `dvc plots show` template, value formatting, and a report
of a project whose pipeline has not produced anything yet."""

from __future__ import annotations

from pathlib import Path

from mnistflow.paths import PLOTS_TEMPLATE
from mnistflow.reporting.page import make_report, number, observed
from mnistflow.reporting.plots_template import offline_template
from tests.project_root import PROJECT_ROOT
from tests.test_pipeline_end_to_end import EXTERNAL, copy_project


def test_the_committed_plots_template_is_the_pinned_bundle():
    committed = (PROJECT_ROOT / PLOTS_TEMPLATE).read_text(encoding="utf-8")
    assert committed == offline_template()
    assert "{plot_divs}" in committed and "{scripts}" not in committed  # no CDN tags
    config = (PROJECT_ROOT / ".dvc" / "config").read_text()
    assert f"html_template = {Path(PLOTS_TEMPLATE).name}" in config


def test_values_read_as_people_expect():
    assert number(0.99190) == "0.9919" and number(6.85e-07, 6) == "6.85e-07"
    assert number(0.09, 1) == "0.1" and number(0.0) == "0.0000"
    assert number(60000) == "60,000" and number(None) == "–" and number(True) == "True"
    assert observed({"unexpected_count": 3, "examples": [1.5], "range": [0.02, 0.5]}) == (
        "range 0.020 … 0.500; 3 outside; e.g. [1.5]"
    )
    assert observed(0) == "0" and observed(None) == "–"


def test_a_report_before_any_run_says_what_is_missing(tmp_path):
    workspace = copy_project(tmp_path / "project")  # committed, nothing reproduced
    assert not (workspace / "reports").exists()
    path, inputs = make_report(workspace)
    html = Path(path).read_text(encoding="utf-8")
    assert html.count("was not written") == 3 and EXTERNAL.findall(html) == []
    assert inputs.metrics and all(row.value is None for row in inputs.metrics)
    assert inputs.charts == [] and inputs.record is None
