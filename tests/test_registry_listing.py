"""The registry's stage order and its listing, on their own (the end-to-end test promotes and
lists on a real registry: tests/test_records_end_to_end.py)."""

from __future__ import annotations

from collections import Counter

import pytest

from mnistflow.errors import PipelineInputError
from mnistflow.release.listing import WIDTH, VersionSummary, render
from mnistflow.release.promotion import Assignment, StageMove, required_stage, skipped_stage


def test_each_stage_requires_the_one_before():
    order = ("dev", "staging", "prod")
    assert required_stage(order, "dev") is None
    assert required_stage(order, "staging") == "dev"
    assert required_stage(order, "prod") == "staging"
    with pytest.raises(PipelineInputError, match="'qa' is not a registry stage; expected one"):
        required_stage(order, "qa")


def test_a_skip_is_read_from_the_history_not_from_the_message():
    order = ("dev", "staging", "prod")

    def moved(version: str, stage: str, message: str = "") -> Assignment:
        return Assignment(version, stage, "someone", "2026-12-06 10:00:00", message)

    history = [moved("v1", "dev"), moved("v1", "staging"), moved("v2", "dev")]
    assert skipped_stage(order, history, "v1", "prod") is None
    # A prod tag made by hand for a version never in staging skipped it, whatever it says.
    assert skipped_stage(order, history, "v2", "prod") == "staging"
    assert skipped_stage(order, [], "v3", "staging") == "dev"
    assert skipped_stage(order, [], "v3", "dev") is None
    shown = render([], [StageMove(moved("v2", "prod", "routine"), "staging")], Counter())
    assert any(
        " -> prod    ! someone      skipped staging, no reason recorded" in line for line in shown
    )
    # A message that claims a forced skip marks nothing where nothing was skipped.
    claimed = render([], [StageMove(moved("v1", "prod", "forced: looks forced"), None)], Counter())
    assert [line for line in claimed if " -> prod" in line and "!" in line] == []


def test_the_listing_fits_100_columns_whatever_the_names():
    summary = VersionSummary(
        version="v10.20.300", stages="dev,staging,prod!,canary", record="x" * 60,
        data="0123abcd", accuracy=0.9919, accuracy_low=0.98994, accuracy_high=0.99348,
        comparison="-0.0004 p=0.23 unpaired", verdict="released despite: " + "y" * 80,
    )  # fmt: skip
    move = Assignment("v10.20.300", "prod", "Someone\x1b[2J With A Long Name",
                      "2026-12-06 10:00:00", "forced: skipped staging: \nz" + "z" * 90)  # fmt: skip
    lines = render([summary], [StageMove(move, "staging")], Counter({"f" * 64: 7}))
    assert all(len(line) <= WIDTH and line.isprintable() for line in lines)
    from rich.cells import cell_len

    wide_move = Assignment("v1", "prod", "名前" * 10, "2026-12-06", "理由" * 60)
    wide = render([summary], [StageMove(wide_move, "staging")], Counter())
    assert all(cell_len(line) <= WIDTH for line in wide)
    row = next(line for line in lines if line.startswith("v10.20.3"))
    assert "0.9919 [0.9899,0.9935]" in row and "-0.0004 p=0.23" in row
    assert any(line.startswith("2026-12-06 10:00 v10.20.3 -> prod    !") for line in lines)
    assert lines[-1].startswith("test set ffffffffffff: 7 release decision(s)")


def test_assignments_within_one_second_keep_the_order_they_were_made(tmp_path):
    """Tag times have one-second resolution; promotions made within a second must still read
    back in the order made (GTO's tag counter), or a skip is judged on the wrong history."""
    import subprocess

    from mnistflow.release.promotion import assignments, stage_moves
    from mnistflow.release.registry import ARTIFACT

    same_second = {"GIT_COMMITTER_DATE": "2026-12-06T10:00:00+00:00",
                   "GIT_AUTHOR_DATE": "2026-12-06T10:00:00+00:00"}  # fmt: skip
    env = {"HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1", "PATH": "/usr/bin:/bin",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
           **same_second}  # fmt: skip

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, env=env, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "artifacts.yaml").write_text(f"{ARTIFACT}:\n  type: model\n  path: model.onnx\n")
    git("add", "artifacts.yaml")
    git("commit", "-q", "-m", "init")
    git("tag", "-a", f"{ARTIFACT}@v1.0.0", "-m", "register")
    # Made in this order: dev, staging, prod (tag names sort dev, prod, staging).
    for counter, stage in enumerate(("dev", "staging", "prod"), start=1):
        git("tag", "-a", f"{ARTIFACT}#{stage}#{counter}", "-m", f"{ARTIFACT} v1.0.0 -> {stage}")
    assert [entry.stage for entry in assignments(tmp_path)] == ["dev", "staging", "prod"]
    assert [move.skipped for move in stage_moves(tmp_path)] == [None, None, None]
