"""Peak memory of `mnistflow predict` over hostile single files of at most 1 MB.

Each case is one file of at most 1 MB built to cost as much as a file that small can: images
at the largest size accepted (4096×4096, in every decoded mode that costs most) and compressed
arrays that inflate to hundreds of MiB (gzipped IDX, a deflated .npz member). Each runs in a
fresh `mnistflow predict` process beside a one-image run, in one go, and the figure is the
peak RSS above that one-image run. The target (issue 23): at most 256 MiB for every case, and
compressed inputs flat whatever they inflate to (the two gzipped IDX sizes agree).
Writes benchmarks/results/input_memory.{json,md}. Needs `dvc repro export` first.

    python benchmarks/input_memory.py
"""

from __future__ import annotations

import gzip
import json
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from predict_throughput import measured_predict  # beside this script

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MAX_INPUT_BYTES = 1 << 20
TARGET_MIB = 256
SIDE = 4096  # mnistflow.serving.images.MAX_IMAGE_PIXELS is 4096×4096


def _digit_canvas(mode: str, background, ink) -> Image.Image:
    """A 4096×4096 canvas with a large hand-drawn-like 7: compresses well, decodes large."""
    image = Image.new(mode, (SIDE, SIDE), background)
    draw = ImageDraw.Draw(image)
    draw.line([(1000, 900), (3000, 900), (1800, 3300)], fill=ink, width=220)
    return image


def _idx_gz(path: Path, images: int) -> None:
    header = (0x0803).to_bytes(4, "big") + images.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    block = bytes(784 * 1024)
    with gzip.GzipFile(path, "wb", compresslevel=9) as stream:
        stream.write(header)
        for start in range(0, images, 1024):
            stream.write(block[: 784 * min(1024, images - start)])


def _npz_deflated(path: Path, images: int) -> None:
    member = np.lib.format.header_data_from_array_1_0(np.zeros((1, 28, 28), np.float32))
    member["shape"] = (images, 28, 28)
    block = bytes(784 * 4 * 1024)
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive,
        archive.open("x.npy", "w", force_zip64=True) as handle,
    ):
        np.lib.format.write_array_header_1_0(handle, member)
        for start in range(0, images, 1024):
            handle.write(block[: 784 * 4 * min(1024, images - start)])


def build_cases(folder: Path) -> dict[str, tuple[Path, str]]:
    """name → (file, what it inflates or decodes to)."""
    cases: dict[str, tuple[Path, str]] = {}
    digit = Image.new("L", (28, 28))
    ImageDraw.Draw(digit).line([(6, 6), (21, 6), (12, 23)], fill=255, width=3)
    digit.save(folder / "one.png")
    cases["one 28×28 PNG (baseline)"] = (folder / "one.png", "784 pixels")
    _digit_canvas("RGBA", (0, 0, 0, 0), (0, 0, 0, 255)).save(folder / "rgba.png", optimize=True)
    cases["PNG RGBA 4096²"] = (folder / "rgba.png", "64 MiB decoded")
    _digit_canvas("I;16", 65535, 0).save(folder / "grey16.png", optimize=True)
    cases["PNG 16-bit 4096²"] = (folder / "grey16.png", "32 MiB decoded")
    _digit_canvas("P", 0, 1).save(folder / "palette.gif")
    cases["GIF palette 4096²"] = (folder / "palette.gif", "16 MiB decoded")
    _digit_canvas("RGB", (255, 255, 255), (0, 0, 0)).save(folder / "photo.jpg", quality=40)
    cases["JPEG RGB 4096²"] = (folder / "photo.jpg", "48 MiB decoded")
    _digit_canvas("F", 1.0, 0.0).save(folder / "float.tif", compression="tiff_adobe_deflate")
    cases["TIFF float 4096²"] = (folder / "float.tif", "64 MiB decoded")
    _digit_canvas("RGBA", (255, 255, 255, 255), (0, 0, 0, 255)).resize((2048, 2048)).save(
        folder / "lossless.webp", lossless=True
    )
    # WebP's cap is 2048×2048 (its decoder holds several copies of the frame).
    cases["WebP RGBA 2048²"] = (folder / "lossless.webp", "16 MiB decoded")
    _digit_canvas("RGBA", (255, 255, 255, 255), (0, 0, 0, 255)).save(
        folder / "refused.webp", lossless=True
    )
    cases["WebP RGBA 4096² (refused)"] = (folder / "refused.webp", "refused before decoding")
    _idx_gz(folder / "small-idx3-ubyte.gz", 128_000)
    cases["gzipped IDX, 128k images"] = (folder / "small-idx3-ubyte.gz", "100 MB inflated")
    _idx_gz(folder / "large-idx3-ubyte.gz", 1_000_000)
    cases["gzipped IDX, 1M images"] = (folder / "large-idx3-ubyte.gz", "784 MB inflated")
    _npz_deflated(folder / "floats.npz", 300_000)
    cases[".npz deflated float32, 300k images"] = (folder / "floats.npz", "941 MB inflated")
    for name, (path, _) in cases.items():
        size = path.stat().st_size
        if size > MAX_INPUT_BYTES:
            raise SystemExit(f"{name}: {size:,} bytes; every case must be at most 1 MB")
    return cases


def peak_rss_mib(source: Path, output: Path) -> tuple[float, float, int]:
    """(peak RSS in MiB, seconds, exit code) of one `mnistflow predict` process: the same
    measurement as predict_throughput.py's, on one hostile file."""
    return measured_predict(source, output)


def rows_in(output: Path) -> tuple[int, int]:
    """(predicted rows, quarantined rows) of a predictions CSV."""
    import csv

    with open(output, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    errors = sum(1 for row in rows if row["error"])
    return len(rows) - errors, errors


def main() -> None:
    figures: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="input-memory-") as scratch:
        folder = Path(scratch)
        cases = build_cases(folder)
        baseline = None
        for name, (path, inflates) in cases.items():
            output = folder / "out.csv"
            rss, seconds, code = peak_rss_mib(path, output)
            predicted, quarantined = rows_in(output)
            baseline = rss if baseline is None else baseline
            figures[name] = {
                "file_bytes": path.stat().st_size,
                "inflates_to": inflates,
                "peak_rss_mib": round(rss, 1),
                "above_one_image_mib": round(rss - baseline, 1),
                "seconds": round(seconds, 1),
                "exit_code": code,
                "predicted_rows": predicted,
                "quarantined_rows": quarantined,
            }
            print(f"{name:<36} {rss:7.0f} MiB  (+{rss - baseline:5.0f})  {seconds:6.1f} s")
    worst = max(case["above_one_image_mib"] for case in figures.values())
    small, large = (figures[f"gzipped IDX, {n} images"]["peak_rss_mib"] for n in ("128k", "1M"))
    result = {
        "cases": figures,
        "target_mib_above_one_image": TARGET_MIB,
        "worst_mib_above_one_image": worst,
        "within_target": worst <= TARGET_MIB,
        "gzipped_idx_rss_ratio_1m_over_128k": round(large / small, 3),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "input_memory.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Peak memory of `mnistflow predict` over single files of at most 1 MB",
        "",
        "One fresh process per file, beside a one-image run, in one go (`benchmarks/"
        "input_memory.py`). Target: at most 256 MiB above the one-image run.",
        "",
        "| file | bytes | inflates / decodes to | peak RSS MiB | above one image | s | rows "
        "predicted / quarantined |",
        "|---|---:|---|---:|---:|---:|---|",
        *(
            f"| {name} | {case['file_bytes']:,} | {case['inflates_to']} | "
            f"{case['peak_rss_mib']:.0f} | {case['above_one_image_mib']:+.0f} | "
            f"{case['seconds']:.1f} | {case['predicted_rows']:,} / {case['quarantined_rows']:,} |"
            for name, case in figures.items()
        ),
        "",
        f"Worst: {worst:+.0f} MiB above the one-image run (target ≤ {TARGET_MIB}). Gzipped IDX "
        f"peak RSS, 1M images over 128k: {result['gzipped_idx_rss_ratio_1m_over_128k']:.3f} "
        "(flat: streams a block at a time).",
        "",
    ]
    (RESULTS / "input_memory.md").write_text("\n".join(lines))
    print(f"worst {worst:+.0f} MiB above one image; written benchmarks/results/input_memory.md")


if __name__ == "__main__":
    main()
