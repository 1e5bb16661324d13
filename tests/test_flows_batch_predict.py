"""The batch-predict flow: sharded, on threads or Dask, always the same output."""

from __future__ import annotations

import numpy as np
from PIL import Image

from flows.batch_predict import batch_predict, shard_inputs


def test_shards_are_contiguous_and_cover_everything():
    files = [f"f{i}" for i in range(7)]
    groups = shard_inputs(files, 3)
    assert groups == [["f0", "f1", "f2"], ["f3", "f4"], ["f5", "f6"]]
    assert shard_inputs(files[:2], 5) == [["f0"], ["f1"]]


def _inbox(tmp_path, mnist):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for index in range(5):
        np.save(inbox / f"batch-{index}.npy", mnist.x_test[index * 40 : (index + 1) * 40])
    Image.fromarray(mnist.x_test[500]).save(inbox / "single.png")
    (inbox / "broken.png").write_bytes(b"nope")
    return inbox


def test_threads_and_dask_give_identical_output(prefect_harness, small_onnx_model, mnist, tmp_path):
    inbox = _inbox(tmp_path, mnist)
    outputs = {}
    for label, options in {
        "threads": {},
        "dask-1": {"dask": True, "dask_workers": 1},
        "dask-2": {"dask": True, "dask_workers": 2},
    }.items():
        output = tmp_path / f"{label}.csv"
        summary = batch_predict(
            str(inbox), str(output), model=str(small_onnx_model), shards=3, **options
        )
        assert summary["images"] == 201 and summary["shards"] == 3 and summary["errors"] == 1
        outputs[label] = output.read_text()
    assert outputs["threads"] == outputs["dask-1"] == outputs["dask-2"]
    lines = outputs["threads"].splitlines()
    assert lines[0].startswith("source,predicted,probability") and len(lines) == 1 + 201 + 1
    assert lines[0].endswith(",error")
    broken = [line for line in lines if "broken.png" in line]
    assert len(broken) == 1 and "not a readable image" in broken[0]
