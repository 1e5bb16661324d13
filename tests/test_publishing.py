"""Publishing is a per-clone decision or a per-run flag, never a default."""

from __future__ import annotations

import subprocess

from mnistflow.release.publishing import SETTING, clone_publishes, publishing


def test_a_clone_publishes_only_when_set(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    assert not clone_publishes(tmp_path)
    assert publishing(tmp_path) is False and publishing(tmp_path, True) is True
    subprocess.run(["git", "config", SETTING, "true"], cwd=tmp_path, check=True)
    assert clone_publishes(tmp_path) and publishing(tmp_path) is True
    assert publishing(tmp_path, False) is False
    subprocess.run(["git", "config", SETTING, "no"], cwd=tmp_path, check=True)
    assert not clone_publishes(tmp_path)
