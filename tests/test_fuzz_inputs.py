"""Many mutated files beside a few good ones: the good rows are always delivered.

Seeded mutations of real inputs of every kind `mnistflow predict` reads (.npy, .npz, PNG, a
gzipped IDX file), each one or more of: bytes flipped, truncated, extended, header fields
rewritten, the suffix swapped for another kind's. Whatever a reader makes of them, each bad
file is a quarantined row with a reason, never a traceback, and the good files' images are
all predicted.
"""

from __future__ import annotations

import gzip
import io
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from tests.test_bad_inputs import predict, read_rows

SUFFIXES = (".npy", ".npz", ".png", "-idx3-ubyte.gz", ".jpg", ".gif")


def templates(digits: np.ndarray) -> dict[str, bytes]:
    """Valid files of each kind, as bytes."""
    npy = io.BytesIO()
    np.save(npy, digits[:5])
    npz = io.BytesIO()
    np.savez(npz, x_test=digits[:5])
    png = io.BytesIO()
    Image.fromarray(digits[0]).save(png, format="PNG")
    idx = struct.pack(">IIII", 0x00000803, 5, 28, 28) + digits[:5].tobytes()
    return {
        ".npy": npy.getvalue(),
        ".npz": npz.getvalue(),
        ".png": png.getvalue(),
        "-idx3-ubyte.gz": gzip.compress(idx),
    }


def mutate(content: bytes, rng: np.random.Generator) -> bytes:
    data = bytearray(content)
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(0, 5))
        if kind == 0 and data:  # flip bytes, mostly near the start where headers live
            for _ in range(int(rng.integers(1, 8))):
                limit = min(len(data), 256) if rng.random() < 0.7 else len(data)
                data[int(rng.integers(0, limit))] ^= int(rng.integers(1, 256))
        elif kind == 1 and data:  # truncate
            del data[int(rng.integers(0, len(data))) :]
        elif kind == 2:  # extend with junk
            data.extend(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes())
        elif kind == 3 and len(data) > 16:  # rewrite a 4-byte header field
            at = int(rng.integers(0, min(len(data) - 4, 64)))
            data[at : at + 4] = struct.pack(">I", int(rng.choice([0, 1, 2**31 - 1, 2**32 - 1])))
        else:  # replace a header word with numpy-ish text
            text = rng.choice([b"'shape': (-1, 28, 28)", b"'descr': '|O'", b"fortran_order': True"])
            at = int(rng.integers(0, max(1, min(len(data), 128))))
            data[at : at + len(text)] = text
    return bytes(data)


def test_mutated_files_never_sink_the_batch(small_onnx_model, mnist_slice, tmp_path):
    rng = np.random.default_rng(20261206)
    digits = mnist_slice.x_test
    kinds = templates(digits)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    np.save(inbox / "good-a.npy", digits[10:13])
    Image.fromarray(digits[13]).save(inbox / "good-b.png")
    for index in range(120):
        source = list(kinds)[index % len(kinds)]
        # A third of them also carry another kind's suffix than their bytes.
        suffix = SUFFIXES[int(rng.integers(0, len(SUFFIXES)))] if index % 3 == 0 else source
        (inbox / f"mutant-{index:03d}{suffix}").write_bytes(mutate(kinds[source], rng))
    output = tmp_path / "out.csv"
    result = predict(small_onnx_model, [inbox], output)
    assert result.exit_code in (0, 1), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    rows = read_rows(output)
    good = [r for r in rows if Path(r["source"]).name.startswith(("good-a.npy[", "good-b.png"))]
    assert len(good) == 4 and all(r["error"] == "" and r["top1_class"] for r in good)
    # Every bad row says which file and why.
    assert all(r["predicted"] == "" for r in rows if r["error"])
    assert all(r["source"].split("[")[0] in r["error"] for r in rows if r["error"])
