"""Checkpoints cannot poison a run: damaged ones are discarded, a complete one always exists."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest

from mnistflow.training.checkpoints import (
    BEST_WEIGHTS_FILE,
    VARIABLES_FILE,
    Checkpoint,
    TrainingState,
    load_checkpoint,
    save_checkpoint,
    snapshots,
)

FINGERPRINT = "f" * 64


def checkpoint(epochs_done: int) -> Checkpoint:
    rng = np.random.default_rng(epochs_done)
    return Checkpoint(
        state=TrainingState(fingerprint=FINGERPRINT, epochs_done=epochs_done),
        variables=[rng.normal(size=(64, 32)).astype(np.float32), np.arange(3, dtype=np.int64)],
        best_weights=[rng.normal(size=(64, 32)).astype(np.float32)],
    )


def test_each_epoch_replaces_the_last_snapshot(tmp_path):
    for epoch in (1, 2, 3):
        save_checkpoint(tmp_path, checkpoint(epoch))
    assert [path.name for path in snapshots(tmp_path)] == ["epoch-0003"]
    loaded = load_checkpoint(tmp_path, FINGERPRINT)
    assert loaded.state.epochs_done == 3
    np.testing.assert_array_equal(loaded.variables[0], checkpoint(3).variables[0])


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda path: path.write_bytes(b""), id="empty"),
        pytest.param(lambda path: path.write_bytes(path.read_bytes()[:100]), id="truncated"),
        pytest.param(lambda path: path.write_bytes(b"PK\x03\x04" + b"\0" * 200), id="corrupt"),
    ],
)
@pytest.mark.parametrize("file_name", [VARIABLES_FILE, BEST_WEIGHTS_FILE, "state.json"])
def test_a_damaged_checkpoint_is_discarded_with_a_warning(tmp_path, caplog, damage, file_name):
    snapshot = save_checkpoint(tmp_path, checkpoint(2))
    damage(snapshot / file_name)
    with caplog.at_level(logging.WARNING):
        assert load_checkpoint(tmp_path, FINGERPRINT) is None
    assert f"discarding the unreadable checkpoint {snapshot}" in caplog.text
    assert snapshots(tmp_path) == []  # gone: the next run does not trip over it again


def test_an_older_snapshot_stands_in_for_a_damaged_newer_one(tmp_path):
    older = save_checkpoint(tmp_path / "old", checkpoint(1))
    newer = save_checkpoint(tmp_path, checkpoint(2))
    older.rename(tmp_path / older.name)  # as if killed before the older one was removed
    (newer / VARIABLES_FILE).write_bytes(b"")
    assert load_checkpoint(tmp_path, FINGERPRINT).state.epochs_done == 1


def test_a_checkpoint_of_another_run_is_ignored(tmp_path, caplog):
    save_checkpoint(tmp_path, checkpoint(2))
    with caplog.at_level(logging.WARNING):
        assert load_checkpoint(tmp_path, "0" * 64) is None
    assert "training code, library versions or devices" in caplog.text


def test_temporary_folders_of_a_killed_write_are_cleaned(tmp_path):
    save_checkpoint(tmp_path, checkpoint(1))
    stale = tmp_path / ".writing-abc123"
    stale.mkdir()
    (stale / VARIABLES_FILE).write_bytes(b"half")
    assert load_checkpoint(tmp_path, FINGERPRINT).state.epochs_done == 1
    assert not stale.exists()


def test_a_complete_snapshot_exists_at_every_instant(tmp_path):
    """Watch the folder while 150 epochs are saved: never a moment without a snapshot."""
    save_checkpoint(tmp_path, checkpoint(0))
    done = threading.Event()
    empty_sightings = []

    def watch():
        while not done.is_set():
            if not snapshots(tmp_path):
                empty_sightings.append(True)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for epoch in range(1, 151):
            save_checkpoint(tmp_path, checkpoint(epoch))
    finally:
        done.set()
        watcher.join()
    assert not empty_sightings
    assert load_checkpoint(tmp_path, FINGERPRINT).state.epochs_done == 150
