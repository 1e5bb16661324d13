"""The batch-predict flow: an incremental inbox with lineage, on threads or Dask, confined."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import pyarrow.parquet as pq
import pytest
from PIL import Image

from flows.batch_predict import batch_predict
from mnistflow.errors import PipelineInputError
from mnistflow.serving.batch import shard_inputs
from mnistflow.serving.inbox import read_manifest


def test_shards_are_contiguous_and_cover_everything():
    files = [f"f{i}" for i in range(7)]
    groups = shard_inputs(files, 3)
    assert groups == [["f0", "f1", "f2"], ["f3", "f4"], ["f5", "f6"]]
    assert shard_inputs(files[:2], 5) == [["f0"], ["f1"]]


@pytest.fixture
def project(tmp_path, small_onnx_model) -> Path:
    """A project folder (dvc.yaml marks it) with an exported model and an empty inbox."""
    root = tmp_path / "project"
    (root / "models").mkdir(parents=True)
    (root / "dvc.yaml").write_text("stages: {}\n")
    shutil.copyfile(small_onnx_model, root / "models" / "model.onnx")
    (root / "data" / "inbox").mkdir(parents=True)
    return root


def add_digits(inbox: Path, images: np.ndarray, first: int) -> None:
    for offset, image in enumerate(images):
        Image.fromarray(image).save(inbox / f"digit-{first + offset:04d}.png")


def shard_task_runs(flow_run_id) -> list[str]:
    """The names of one flow run's completed shard task runs, sorted."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])), limit=200
        )
    return sorted(r.name for r in runs if r.name.startswith("shard-") and r.state.is_completed())


def partitions(output: Path) -> list[Path]:
    return sorted(output.glob("part-*.parquet"))


def without_time(path: Path) -> dict:
    table = pq.read_table(path).to_pydict()
    table.pop("predicted_at")
    return table


@pytest.mark.parametrize("runner", ["threads", "dask"])
def test_the_inbox_predicts_each_file_once(prefect_harness, project, mnist, runner):
    inbox, output = project / "data" / "inbox", project / "predictions" / "inbox"
    options = {"dask": True, "dask_workers": 2} if runner == "dask" else {}
    add_digits(inbox, mnist.x_test[:2000], 0)
    model_sha256 = hashlib.sha256((project / "models" / "model.onnx").read_bytes()).hexdigest()

    state = batch_predict(root=str(project), shards=3, return_state=True, **options)
    first = state.result()
    assert first["files_predicted"] == 2000 and first["images"] == 2000 and first["errors"] == 0
    # On threads the shards are tasks of this very flow run (no subflow to create: see
    # flows/batch_predict.py); on Dask, of its predict-shards subflow.
    in_this_run = ["shard-0", "shard-1", "shard-2"] if runner == "threads" else []
    assert shard_task_runs(state.state_details.flow_run_id) == in_this_run
    second = batch_predict(root=str(project), shards=3, **options)
    assert second["files_seen"] == 2000 and second["files_predicted"] == 0
    add_digits(inbox, mnist.x_test[2000:2100], 2000)
    third = batch_predict(root=str(project), shards=3, **options)
    assert third["files_seen"] == 2100 and third["files_predicted"] == 100

    [one, two] = partitions(output)
    assert (one.name, two.name) == (first["partition"], third["partition"])
    rows = pq.read_table(one).to_pydict()
    assert len(rows["source"]) == 2000 and set(rows["model_sha256"]) == {model_sha256}
    assert set(rows["model_version"]) == {"unregistered"}
    predicted = np.array(rows["predicted"])
    labels = mnist.y_test[[int(Path(name).stem[6:]) for name in rows["file"]]]
    assert np.mean(predicted == labels) > 0.8
    assert pq.read_table(two).num_rows == 100
    manifest = read_manifest(output)
    assert len(manifest) == 2100
    assert {record["partition"] for record in manifest} == {one.name, two.name}
    assert all(record["images"] == 1 and record["error"] is None for record in manifest)

    # A renamed copy is the same content: not predicted. A changed file is.
    shutil.copyfile(inbox / "digit-0000.png", inbox / "copy-of-0.png")
    Image.fromarray(mnist.x_test[5000]).save(inbox / "digit-0001.png")
    fourth = batch_predict(root=str(project), shards=3, **options)
    assert fourth["files_predicted"] == 1
    assert pq.read_table(output / fourth["partition"]).to_pydict()["file"] == ["digit-0001.png"]


def test_threads_and_dask_write_the_same_partition(prefect_harness, project, mnist, tmp_path):
    inbox = project / "data" / "inbox"
    add_digits(inbox, mnist.x_test[:60], 0)
    np.save(inbox / "batch.npy", mnist.x_test[60:200])
    (inbox / "broken.png").write_bytes(b"nope")
    tables = {}
    for label, options in {"threads": {}, "dask": {"dask": True, "dask_workers": 2}}.items():
        output = f"predictions/{label}"
        summary = batch_predict(root=str(project), output=output, shards=3, **options)
        assert summary["images"] == 200 and summary["errors"] == 1
        tables[label] = without_time(project / output / summary["partition"])
    assert tables["threads"] == tables["dask"]
    broken = [e for e in tables["threads"]["error"] if e]
    assert len(broken) == 1 and "not a readable" in broken[0]
    manifest = {r["source"]: r for r in read_manifest(project / "predictions" / "threads")}
    assert manifest["batch.npy"]["images"] == 140
    assert "not a readable" in manifest["broken.png"]["error"]


def test_a_new_model_repredicts_only_when_asked(prefect_harness, project, mnist):
    inbox, output = project / "data" / "inbox", project / "predictions" / "inbox"
    add_digits(inbox, mnist.x_test[:30], 0)
    batch_predict(root=str(project))
    model = onnx.load(project / "models" / "model.onnx")
    entry = model.metadata_props.add()
    entry.key, entry.value = "model_version", "v2"
    onnx.save(model, project / "models" / "model.onnx")

    assert batch_predict(root=str(project))["files_predicted"] == 0
    again = batch_predict(root=str(project), repredict=True)
    assert again["files_predicted"] == 30
    rows = pq.read_table(output / again["partition"]).to_pydict()
    assert set(rows["model_version"]) == {"v2"}
    assert batch_predict(root=str(project), repredict=True)["files_predicted"] == 0


def test_a_partition_never_committed_is_set_aside_never_deleted(prefect_harness, project, mnist):
    inbox, output = project / "data" / "inbox", project / "predictions" / "inbox"
    add_digits(inbox, mnist.x_test[:10], 0)
    first = batch_predict(root=str(project))
    stray = output / "part-20000101T000000000000Z.parquet"
    shutil.copyfile(output / first["partition"], stray)  # as if a run died before its commit
    batch_predict(root=str(project))
    assert partitions(output) == [output / first["partition"]]
    assert (output / "uncommitted" / stray.name).read_bytes() == (
        output / first["partition"]
    ).read_bytes()


def test_a_lost_manifest_is_rebuilt_from_the_partitions(prefect_harness, project, mnist):
    """The partitions may be the only copy of predictions whose files left the inbox."""
    inbox, output = project / "data" / "inbox", project / "predictions" / "lost"
    add_digits(inbox, mnist.x_test[:10], 0)
    first = batch_predict(root=str(project), output="predictions/lost")
    before = read_manifest(output)
    (output / "manifest.parquet").unlink()
    for path in inbox.iterdir():  # the files have left the inbox
        path.unlink()
    add_digits(inbox, mnist.x_test[10:13], 10)
    second = batch_predict(root=str(project), output="predictions/lost")
    assert (output / first["partition"]).is_file() and second["files_predicted"] == 3
    rebuilt = {r["source"]: r for r in read_manifest(output)}
    for record in before:
        kept = rebuilt[record["source"]]
        assert (kept["content_sha256"], kept["partition"], kept["images"]) == (
            record["content_sha256"], record["partition"], record["images"]
        )  # fmt: skip


def test_tampered_output_state_is_set_aside_and_never_hides_or_loses_predictions(
    prefect_harness, project, mnist, tmp_path
):
    """A manifest that is garbage, of the wrong shape or a link; a partition that cannot be
    read or was planted; an uncommitted/ that is a link: each is moved aside (never deleted,
    never followed), and every file in the inbox is still predicted."""
    import pyarrow as pa

    inbox, output = project / "data" / "inbox", project / "predictions" / "tampered"
    add_digits(inbox, mnist.x_test[:6], 0)
    run = {"root": str(project), "output": "predictions/tampered"}
    first = batch_predict(**run)
    committed = (output / first["partition"]).read_bytes()
    manifest = output / "manifest.parquet"

    # Garbage in the manifest: moved aside, rebuilt from the partition, which stays; the
    # rebuilt records are `recovered`, so the inbox's files are predicted again, not hidden.
    manifest.write_bytes(b"PAR1 not a parquet file")
    second = batch_predict(**run)
    assert second["files_predicted"] == 6
    assert (output / "uncommitted" / "manifest.parquet").read_bytes() == b"PAR1 not a parquet file"
    assert (output / first["partition"]).read_bytes() == committed
    assert {r["recovered"] for r in read_manifest(output)} == {True, False}

    # Valid Parquet of the wrong shape: the same.
    pq.write_table(pa.table({"content_sha256": ["x"]}), manifest)
    assert batch_predict(**run)["files_predicted"] == 6
    assert len(list((output / "uncommitted").glob("manifest.parquet*"))) == 2

    # The manifest gone, a planted partition claims every inbox file with its real hash, and
    # another partition is not Parquet: the planted one does not hide the files, the broken
    # one is moved aside.
    table = pq.read_table(output / first["partition"])
    planted = output / "part-20000101T000000000000Z.parquet"
    pq.write_table(table, planted)
    broken = output / "part-20000101T000000000001Z.parquet"
    broken.write_bytes(b"garbage")
    manifest.unlink()
    assert batch_predict(**run)["files_predicted"] == 6
    assert (output / "uncommitted" / broken.name).read_bytes() == b"garbage"
    assert planted.is_file()  # kept: it may be the only copy of something

    # uncommitted/ replaced by a link out of the project: nothing moves through it.
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.move(output / "uncommitted", tmp_path / "kept-aside")
    (output / "uncommitted").symlink_to(outside)
    stray = output / "part-20000101T000000000002Z.parquet"
    stray.write_bytes(committed)
    batch_predict(**run)
    assert list(outside.iterdir()) == []
    [fresh] = output.glob("uncommitted-*")
    assert (fresh / stray.name).read_bytes() == committed and not stray.exists()


def test_planted_lock_files_are_neither_followed_nor_believed(
    prefect_harness, project, mnist, tmp_path
):
    from mnistflow.serving.batch import inbox_lock

    add_digits(project / "data" / "inbox", mnist.x_test[:4], 0)
    output = (project / "predictions" / "locked").resolve()
    lock = inbox_lock(project.resolve(), output)
    lock.parent.mkdir(parents=True, exist_ok=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    lock.symlink_to(victim)
    with pytest.raises(PipelineInputError, match="lock file"):
        batch_predict(root=str(project), output="predictions/locked")
    assert victim.read_text() == "precious"
    lock.unlink()
    # Valid JSON of the wrong shape, and a forged owner naming a live process: ignored.
    lock.write_text(json.dumps({"owner": f"{os.getpid()}:1", "pid": "x", "extra": [1]}))
    assert batch_predict(root=str(project), output="predictions/locked")["files_predicted"] == 4
    lock.write_text("[1, 2, 3]")
    assert batch_predict(root=str(project), output="predictions/locked")["files_predicted"] == 0


def test_parameters_are_confined_and_the_model_verified(
    prefect_harness, project, mnist, tmp_path, monkeypatch
):
    add_digits(project / "data" / "inbox", mnist.x_test[:5], 0)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for parameter in ("inbox", "output", "model"):
        with pytest.raises(PipelineInputError, match=f"parameter {parameter}=.*outside"):
            batch_predict(root=str(project), **{parameter: str(outside)})
    planted = project / "data" / "inbox" / "planted.onnx"
    shutil.copyfile(project / "models" / "model.onnx", planted)
    with pytest.raises(PipelineInputError, match="expected a file under"):
        batch_predict(root=str(project), model="data/inbox/planted.onnx")
    planted.unlink()
    with pytest.raises(PipelineInputError, match="points into"):
        batch_predict(root=str(project), output=".git/predictions")
    # A symlink in the inbox that leads out of the project is not followed.
    secret = outside / "secret.npy"
    np.save(secret, mnist.x_test[:3])
    (project / "data" / "inbox" / "link.npy").symlink_to(secret)
    linked = batch_predict(root=str(project), output="predictions/linked")
    assert linked["files_seen"] == 5
    (project / "data" / "inbox" / "link.npy").unlink()
    with pytest.raises(PipelineInputError, match="dask_address.*none"):
        batch_predict(root=str(project), dask=True, dask_address="tcp://10.0.0.1:8786")
    # An operator may widen the roots.
    monkeypatch.setenv("MNISTFLOW_DATA_ROOTS", str(outside))
    summary = batch_predict(root=str(project), output=str(outside / "out"))
    assert summary["files_predicted"] == 5

    (project / "reports").mkdir()
    (project / "reports" / "export.json").write_text(json.dumps({"onnx_sha256": "0" * 64}))
    with pytest.raises(PipelineInputError, match="differs from the expected.*not served"):
        batch_predict(root=str(project), output="predictions/verified")
    assert not (project / "predictions" / "verified" / "manifest.parquet").exists()


def test_the_inbox_flow_delivers_good_files_beside_mutants_run_after_run(
    prefect_harness, project, mnist_slice
):
    """The fuzz test's mutated files, a name that is not UTF-8 and a name holding a formula,
    through the real flow on threads: each run predicts the good files, quarantines the rest
    with a reason, and the next run neither fails nor predicts them again."""
    from tests.test_fuzz_inputs import SUFFIXES, mutate, templates

    rng = np.random.default_rng(7)
    inbox, output = project / "data" / "inbox", project / "predictions" / "fuzz"
    kinds = templates(mnist_slice.x_test)
    for index in range(40):
        source = list(kinds)[index % len(kinds)]
        suffix = SUFFIXES[int(rng.integers(0, len(SUFFIXES)))] if index % 3 == 0 else source
        (inbox / f"mutant-{index:03d}{suffix}").write_bytes(mutate(kinds[source], rng))
    Image.fromarray(mnist_slice.x_test[20]).save(os.fsdecode(bytes(inbox) + b"/good-\xff.png"))
    Image.fromarray(mnist_slice.x_test[21]).save(inbox / "=HYPERLINK(1).png")
    run = {"root": str(project), "output": "predictions/fuzz", "shards": 3}
    first = batch_predict(**run)
    assert first["files_predicted"] == 42
    rows = pq.read_table(output / first["partition"]).to_pylist()
    good = {row["file"]: row for row in rows if row["file"].startswith(("good-", "=HYPER"))}
    assert set(good) == {"good-\\xff.png", "=HYPERLINK(1).png"}
    assert all(row["error"] is None and row["predicted"] is not None for row in good.values())
    failed = [row for row in rows if row["error"] is not None]
    assert failed and all(row["file"].split("[")[0] in row["error"] for row in failed)
    second = batch_predict(**run)
    assert second["files_predicted"] == 0 and second["files_seen"] == 42


def test_a_planted_manifest_a_restored_mtime_or_a_link_hides_nothing_and_reads_nothing(
    prefect_harness, project, mnist, tmp_path
):
    """The output folder and the inbox are writable by others: a well-formed manifest naming a
    partition that does not exist, a file rewritten with its old size and mtime put back, a
    manifest announcing more rows than are ever read, a link to the project's DVC config."""
    import numpy as np
    import pyarrow as pa

    from mnistflow.serving.inbox import MAX_MANIFEST_RECORDS, _manifest_schema

    inbox, output = project / "data" / "inbox", project / "predictions" / "planted"
    run = {"root": str(project), "output": "predictions/planted"}
    add_digits(inbox, mnist.x_test[:2], 0)
    victim = inbox / "digit-0000.png"
    record = {
        "content_sha256": hashlib.sha256(victim.read_bytes()).hexdigest(), "source": "x",
        "size": -1, "mtime_ns": -1, "model_sha256": "0" * 64, "model_version": None,
        "partition": "part-20000101T000000000000Z.parquet", "predicted_at": "2000-01-01",
        "images": 1, "error": None, "recovered": False, "ctime_ns": -1, "inode": -1,
    }  # fmt: skip
    output.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([record], schema=_manifest_schema()),
                   output / "manifest.parquet")  # fmt: skip
    first = batch_predict(**run)
    assert first["files_predicted"] == 2  # the planted record hid nothing

    # Rewritten with the old size, modification time restored (cp -p, rsync -t): hashed again.
    stamps = os.stat(victim)
    other = tmp_path / "other.png"
    Image.fromarray(mnist.x_test[5]).save(other)
    victim.write_bytes(other.read_bytes()[: stamps.st_size].ljust(stamps.st_size, b"\0"))
    assert victim.stat().st_size == stamps.st_size
    os.utime(victim, ns=(stamps.st_atime_ns, stamps.st_mtime_ns))
    assert batch_predict(**run)["files_predicted"] == 1

    # A manifest whose footer announces more rows than are ever read: set aside unread.
    rows = MAX_MANIFEST_RECORDS + 1
    pq.write_table(pa.table({"content_sha256": pa.array(np.zeros(rows, np.int64))}),
                   output / "manifest.parquet")  # fmt: skip
    batch_predict(**run)
    assert any(p.name.startswith("manifest.parquet") for p in (output / "uncommitted").iterdir())

    # A link in the inbox to the project's DVC config: never read, hashed or quoted.
    (project / ".dvc").mkdir(exist_ok=True)
    (project / ".dvc" / "config.local").write_text("['remote \"team\"']\n password = hunter2\n")
    (inbox / "creds.npy").symlink_to(project / ".dvc" / "config.local")
    found = batch_predict(**run)
    assert found["files_seen"] == 2
    for partition in output.glob("part-*.parquet"):
        assert "creds" not in str(pq.read_table(partition).to_pydict())


def test_planted_state_with_a_matching_partition_still_hides_nothing(
    prefect_harness, project, mnist
):
    """A second review's variants: a planted record backed by a one-column partition holding
    the victim's real hash; a planted record with the victim's name, size, times and inode but
    a made-up hash, backed by a partition holding that hash; a manifest with one huge cell."""
    import pyarrow as pa

    from mnistflow.serving.inbox import _manifest_schema

    inbox, output = project / "data" / "inbox", project / "predictions" / "second"
    run = {"root": str(project), "output": "predictions/second"}
    add_digits(inbox, mnist.x_test[:1], 0)
    victim = inbox / "digit-0000.png"
    status = victim.stat()
    real = hashlib.sha256(victim.read_bytes()).hexdigest()
    partition = "part-20000101T000000000000Z.parquet"
    output.mkdir(parents=True)

    def plant(source: str, digest: str) -> None:
        record = {
            "content_sha256": digest, "source": source, "size": status.st_size,
            "mtime_ns": status.st_mtime_ns, "model_sha256": "0" * 64, "model_version": None,
            "partition": partition, "predicted_at": "2000-01-01", "images": 1, "error": None,
            "recovered": False, "ctime_ns": status.st_ctime_ns, "inode": status.st_ino,
        }  # fmt: skip
        pq.write_table(pa.Table.from_pylist([record], schema=_manifest_schema()),
                       output / "manifest.parquet")  # fmt: skip
        pq.write_table(pa.table({"content_sha256": [digest]}), output / partition)

    plant("decoy.png", real)
    assert batch_predict(**run)["files_predicted"] == 1
    for leftover in output.glob("*.parquet"):
        leftover.unlink()
    plant("digit-0000.png", "f" * 64)
    assert batch_predict(**run)["files_predicted"] == 1

    # One 129 MiB cell in a few KB: set aside from its footer, never read.
    huge = {name: [None] for name in _manifest_schema().names}
    huge.update(content_sha256=["a" * 64], source=["A" * (129 << 20)], partition=[partition],
                model_sha256=["0" * 64], predicted_at=["x"])  # fmt: skip
    pq.write_table(pa.Table.from_pydict(huge, schema=_manifest_schema()),
                   output / "manifest.parquet", compression="zstd")  # fmt: skip
    assert (output / "manifest.parquet").stat().st_size < 1 << 20
    batch_predict(**run)
    aside = [p for p in (output / "uncommitted").iterdir() if p.name.startswith("manifest")]
    assert aside and not any("A" * 100 in str(r) for r in read_manifest(output))
