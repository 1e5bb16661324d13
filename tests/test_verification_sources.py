"""`mnistflow verify` copies a revision's data source in only from this project, reached
without links, and only into the replay's worktree, never through a link the revision commits;
its worktree reaches the remotes this clone reaches, local configuration included."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import yaml

from mnistflow.core.hashing import md5_of_file
from mnistflow.errors import PipelineInputError
from mnistflow.release.verification import (
    _configure_replay,
    _provide_data,
    _reached_without_links,
    detached_worktree,
)


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


def dvc_config(root, *arguments: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "dvc", "config", *arguments],
        cwd=root, capture_output=True, text=True, check=True, timeout=120,
    ).stdout.strip()  # fmt: skip


def git_commit(root, message: str) -> None:
    identity = ["-c", "user.name=t", "-c", "user.email=t@t.invalid"]
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", *identity, "commit", "-q", "-m", message], cwd=root, check=True)


@pytest.fixture
def clone(tmp_path):
    """A DVC project whose first commit has no remote and whose second commits the team's
    bucket URL; its .dvc/config.local (never committed) adds what `join` adds on a machine
    that commits the URL: the default, the credential file (relative), and a cache of its own."""
    root = tmp_path / "clone"
    root.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True)
    git_commit(root, "dvc, no remote yet")
    with open(root / ".dvc" / "config", "a") as config:
        config.write("['remote \"team\"']\n    url = s3://bucket/dvc\n")
    git_commit(root, "the team's bucket")
    (root / "keys").write_text("[team]\n")
    (root / ".dvc" / "config.local").write_text(
        "[core]\n    remote = team\n[cache]\n    dir = ../shared-cache\n"
        "['remote \"team\"']\n    endpointurl = http://127.0.0.1:9\n"
        "    credentialpath = ../keys\n"
    )
    return root


@pytest.mark.parametrize("revision", ["HEAD", "HEAD~1"])
def test_the_replay_reaches_the_remote_as_this_clone_does_with_a_private_cache(clone, revision):
    """HEAD~1 does not know the remote at all: the replay still gets it whole, as this clone
    sees it, not a URL-less fragment DVC would refuse."""
    local = (clone / ".dvc" / "config.local").read_text()
    with detached_worktree(clone, revision) as worktree:
        assert not (worktree / ".dvc" / "config.local").exists()
        _configure_replay(clone, worktree)
        assert dvc_config(worktree, "core.remote") == "team"
        assert dvc_config(worktree, "remote.team.url") == "s3://bucket/dvc"
        assert dvc_config(worktree, "remote.team.endpointurl") == "http://127.0.0.1:9"
        credentials = dvc_config(worktree, "--local", "remote.team.credentialpath")
        assert (worktree / ".dvc" / credentials).resolve() == (clone / "keys").resolve()
        cache = dvc_config(worktree, "--local", "cache.dir")
        assert (worktree / ".dvc" / cache).resolve() == (worktree.parent / "cache").resolve()
    assert (clone / ".dvc" / "config.local").read_text() == local  # the clone's own unchanged


def test_a_revision_that_commits_a_local_config_or_a_link_there_is_not_obeyed(clone, tmp_path):
    (clone / ".dvc" / "config.local").rename(tmp_path / "aside")
    (clone / ".dvc" / "config.local").write_text("[cache]\n    dir = /tmp/elsewhere\n")
    subprocess.run(["git", "add", "-f", ".dvc/config.local"], cwd=clone, check=True)
    git_commit(clone, "a committed local config")
    with detached_worktree(clone, "HEAD") as worktree:
        _configure_replay(clone, worktree)
        cache = dvc_config(worktree, "--local", "cache.dir")
        assert (worktree / ".dvc" / cache).resolve() == (worktree.parent / "cache").resolve()

    (clone / ".dvc" / "config.local").unlink()
    (clone / ".dvc" / "config.local").symlink_to(tmp_path / "aside")
    git_commit(clone, "a link where the local config goes")
    refused = pytest.raises(
        PipelineInputError, match="commits .dvc, .dvc/config or .dvc/config.local as a link"
    )
    with detached_worktree(clone, "HEAD") as worktree, refused:
        _configure_replay(clone, worktree)
    assert (tmp_path / "aside").read_text().startswith("[core]")  # never written through


@pytest.mark.parametrize(
    "committed, named",
    [
        ("    profile = admin\n", "remote 'team'"),  # in the team section, the file's last
        ("[cache]\n    local = other\n['remote \"other\"']\n    url = /tmp/other-cache\n",
         "cache.local"),
        # A remote of the revision's own, handed this clone's credential file.
        ("['remote \"evil\"']\n    url = s3://attacker\n    credentialpath = ../keys\n",
         "remote 'evil'"),
        ("[studio]\n    url = http://attacker.invalid\n", "studio"),  # the token's target
    ],
)  # fmt: skip
def test_a_revision_that_adds_to_this_clones_remote_or_cache_is_refused(clone, committed, named):
    """Keys a revision commits stay beneath the replay's local config: one more on the
    clone's remote (its credentials would go with it), or a remote named as the cache."""
    with open(clone / ".dvc" / "config", "a") as config:  # after the team's section
        config.write(committed)
    git_commit(clone, "settings of the revision's own")
    # This clone's working config is the one before: the revision is someone else's.
    subprocess.run(["git", "checkout", "HEAD~1", "--", ".dvc/config"], cwd=clone, check=True)
    refused = pytest.raises(PipelineInputError, match=f"sets [^;]*{named}")
    with detached_worktree(clone, "HEAD") as worktree, refused:
        _configure_replay(clone, worktree)


def test_a_revision_that_commits_a_folder_as_the_local_config_is_refused(clone):
    (clone / ".dvc" / "config.local").unlink()
    (clone / ".dvc" / "config.local").mkdir()
    (clone / ".dvc" / "config.local" / "x").write_text("x")
    subprocess.run(["git", "add", "-f", ".dvc/config.local/x"], cwd=clone, check=True)
    git_commit(clone, "a folder where the local config goes")
    refused = pytest.raises(PipelineInputError, match="other than a folder and files")
    with detached_worktree(clone, "HEAD") as worktree, refused:
        _configure_replay(clone, worktree)


def test_a_revision_that_commits_a_link_inside_dvc_is_refused(clone, tmp_path):
    """DVC writes its tmp/ folder (locks, experiments) inside .dvc: never through a link."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (clone / ".dvc" / "tmp").mkdir(exist_ok=True)
    shutil.rmtree(clone / ".dvc" / "tmp")
    (clone / ".dvc" / "tmp").symlink_to(victim)
    subprocess.run(["git", "add", "-f", ".dvc/tmp"], cwd=clone, check=True)
    git_commit(clone, "a link where DVC keeps its locks")
    refused = pytest.raises(PipelineInputError, match="or a link inside .dvc")
    with detached_worktree(clone, "HEAD") as worktree, refused:
        _configure_replay(clone, worktree)
    assert list(victim.iterdir()) == []  # nothing written through it
