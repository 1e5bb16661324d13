"""The registry's stage order and its listing, on their own (the end-to-end test promotes and
lists on a real registry: tests/test_records_end_to_end.py)."""

from __future__ import annotations

from collections import Counter

import pytest

from mnistflow.errors import PipelineInputError
from mnistflow.release.listing import WIDTH, VersionSummary, render
from mnistflow.release.promotion import Assignment, required_stage


def test_each_stage_requires_the_one_before():
    order = ("dev", "staging", "prod")
    assert required_stage(order, "dev") is None
    assert required_stage(order, "staging") == "dev"
    assert required_stage(order, "prod") == "staging"
    with pytest.raises(PipelineInputError, match="'qa' is not a registry stage; expected one"):
        required_stage(order, "qa")


def test_the_listing_fits_100_columns_whatever_the_names():
    summary = VersionSummary(
        version="v10.20.300", stages="dev,staging,prod!,canary", record="x" * 60,
        data="0123abcd", accuracy=0.9919, accuracy_low=0.98994, accuracy_high=0.99348,
        comparison="-0.0004 p=0.23 unpaired", verdict="released despite: " + "y" * 80,
    )  # fmt: skip
    move = Assignment("v10.20.300", "prod", "Someone\x1b[2J With A Long Name",
                      "2026-12-06 10:00:00", "forced: skipped staging: \nz" + "z" * 90)  # fmt: skip
    lines = render([summary], [move], Counter({"f" * 64: 7}))
    assert all(len(line) <= WIDTH and line.isprintable() for line in lines)
    row = next(line for line in lines if line.startswith("v10.20.3"))
    assert "0.9919 [0.9899,0.9935]" in row and "-0.0004 p=0.23" in row
    assert any(line.startswith("2026-12-06 10:00 v10.20.3 -> prod    !") for line in lines)
    assert lines[-1].startswith("test set ffffffffffff: 7 release decision(s)")
