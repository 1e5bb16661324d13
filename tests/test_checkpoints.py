"""Checkpoints cannot poison a run: damaged ones are discarded, a complete one always exists."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time

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
from tests.project_root import PROJECT_ROOT

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
    [only] = snapshots(tmp_path)
    assert only.name.startswith("epoch-0003-")
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
    assert snapshots(tmp_path) == []  # set aside: the next run does not trip over it again
    assert (tmp_path / f".damaged-{snapshot.name}").is_dir()


def test_saving_the_same_epoch_again_keeps_a_snapshot_throughout(tmp_path):
    first = save_checkpoint(tmp_path, checkpoint(4))
    second = save_checkpoint(tmp_path, checkpoint(4))
    assert first != second and snapshots(tmp_path) == [second]


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


SAVE_FOREVER = """
import sys
import numpy as np
from pathlib import Path
from mnistflow.training.checkpoints import (
    Checkpoint, TrainingState, load_checkpoint, save_checkpoint,
)
folder = Path(sys.argv[1])
resumed = load_checkpoint(folder, "f" * 64)
epoch = resumed.state.epochs_done if resumed else 0
print("saving", flush=True)
while True:
    epoch += 1
    save_checkpoint(folder, Checkpoint(
        state=TrainingState(fingerprint="f" * 64, epochs_done=epoch),
        variables=[np.full((256, 256), epoch, dtype=np.float32)],
        best_weights=[np.full((64,), epoch, dtype=np.float32)],
    ))
"""


def test_a_kill_at_any_moment_leaves_a_complete_checkpoint(tmp_path):
    """SIGKILL a process that saves checkpoints back to back, 25 times at random moments:
    each time the newest readable snapshot is complete and consistent."""
    rng = np.random.default_rng(7)
    folder = tmp_path / "checkpoints"
    last_epoch = 0
    for _ in range(25):
        writer = subprocess.Popen(
            [sys.executable, "-c", SAVE_FOREVER, str(folder)],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
        )
        assert writer.stdout.readline().strip() == b"saving"
        time.sleep(rng.uniform(0.01, 0.15))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        loaded = load_checkpoint(folder, FINGERPRINT)
        assert loaded is not None  # never a moment without a complete snapshot
        epoch = loaded.state.epochs_done
        assert np.all(loaded.variables[0] == epoch) and np.all(loaded.best_weights[0] == epoch)
        last_epoch = max(last_epoch, epoch)
        # The loaded one is the newest (a kill between the rename and the clean-up may leave
        # the one before it too).
        assert snapshots(folder)[0].name.startswith(f"epoch-{epoch:04d}-")
    assert last_epoch > 1
