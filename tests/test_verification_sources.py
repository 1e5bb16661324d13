"""`mnistflow verify` copies a revision's data source in only from this project, reached
without links, and only into the replay's worktree, never through a link the revision commits."""

from __future__ import annotations

import pytest
import yaml

from mnistflow.core.hashing import md5_of_file
from mnistflow.errors import PipelineInputError
from mnistflow.release.verification import _provide_data, _reached_without_links


def lock_recording(source: str, md5: str) -> str:
    return yaml.safe_dump({"stages": {"ingest": {"deps": [{"path": source, "md5": md5}]}}})


@pytest.fixture
def project(tmp_path):
    root, worktree = tmp_path / "project", tmp_path / "worktree"
    (root / "data").mkdir(parents=True)
    (root / "data" / "source.npz").write_bytes(b"DATA")
    worktree.mkdir()
    (worktree / "params.yaml").write_text("data:\n  source: data/source.npz\n")
    return root, worktree


def test_a_plain_source_of_the_project_is_copied_in(project):
    root, worktree = project
    lock = lock_recording("data/source.npz", md5_of_file(root / "data" / "source.npz"))
    assert _provide_data(root, worktree, lock, print).startswith("recomputed from the source")
    assert (worktree / "data" / "source.npz").read_bytes() == b"DATA"


def test_a_link_the_revision_commits_is_not_written_through(project, tmp_path):
    root, worktree = project
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "source.npz").write_text("precious")
    (worktree / "data").symlink_to(victim)
    lock = lock_recording("data/source.npz", md5_of_file(root / "data" / "source.npz"))
    with pytest.raises(PipelineInputError, match="cannot replay"):
        _provide_data(root, worktree, lock, print)  # falls back to the remote: there is none
    assert (victim / "source.npz").read_text() == "precious"


def test_only_paths_inside_without_links_count(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert _reached_without_links(tmp_path, "real/file")
    assert not _reached_without_links(tmp_path, "link/file")
    assert not _reached_without_links(tmp_path, "../real/file")
    assert not _reached_without_links(tmp_path, "/etc/passwd")
