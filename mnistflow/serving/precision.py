"""Which model file a prediction serves: the float32 model as given, or the int8 model export
released beside it.

`auto` takes the int8 model where it is released beside the float32 one (made from those very
bytes, not refused by its gate, both hashes recorded in the project's reports/export.json) and
the CPU has integer dot-product units; an int8 file given directly is served only as such a
pair, and always pinned to the hash export recorded. Kept apart from mnistflow.release.
quantization, which the export stage runs: choosing at prediction time must not re-run export.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mnistflow.constants import PRECISION_KEY, QUANTIZED_FROM_KEY, REFUSED_KEY
from mnistflow.core.hashing import sha256_of_file
from mnistflow.core.json_files import read_json
from mnistflow.core.onnx_metadata import metadata_of
from mnistflow.errors import PipelineInputError
from mnistflow.paths import EXPORT_REPORT

# CPU flags (Linux names) of integer dot-product units onnxruntime's u8×s8 kernels use.
CPU_INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def int8_path_for(fp32_path: Path) -> Path:
    """Where the int8 model of `fp32_path` lives: models/model.onnx -> models/model.int8.onnx."""
    fp32_path = Path(fp32_path)
    return fp32_path.with_name(f"{fp32_path.stem}.int8{fp32_path.suffix}")


def fp32_path_for(int8_path: Path) -> Path:
    """The float32 model an int8 file pairs with: models/model.int8.onnx -> models/model.onnx."""
    int8_path = Path(int8_path)
    stem = int8_path.stem.removesuffix(".int8")
    return int8_path.with_name(f"{stem}{int8_path.suffix}")


Precision = Literal["auto", "int8", "fp32"]


@dataclass(frozen=True)
class ServedPrecision:
    path: Path
    precision: Literal["int8", "fp32"]
    why: str
    # The sha256 the served bytes must have (an int8 model: the one export recorded), so a file
    # swapped between this choice and the session's load is refused, not served.
    sha256: str | None = None


def choose_precision(
    model_path: Path,
    precision: Precision,
    device: str = "cpu",
    cpu_flags: frozenset[str] = frozenset(),
) -> ServedPrecision:
    """The model file to serve for `precision`: the file as given, or its int8 sibling.

    `auto` takes the int8 model when one is released beside the float32 one (made from those
    very bytes, not refused by its gate) and the CPU has integer dot-product units (VNNI or
    AMX): there it is the faster at every batch size (benchmarks/results/precision.md) and its
    gate bounds the accuracy it may lose. Without them onnxruntime's u8×s8 kernels can
    saturate 16-bit intermediates, so the gate's figures, measured on such a CPU, would not
    hold; a GPU runs the float32 model."""
    model_path = Path(model_path)
    if _metadata(model_path).get(PRECISION_KEY) == "int8":
        if precision == "fp32":
            raise PipelineInputError(
                f"--precision fp32: {model_path} is an int8 model; give the float32 file"
            )
        # Given directly, an int8 file is still served only as half of the pair export
        # released, never on its own metadata's word.
        fp32_path = fp32_path_for(model_path)
        problem = int8_problem(fp32_path, model_path)
        if problem is not None:
            raise PipelineInputError(
                f"{model_path} is an int8 model, served only as export released it beside "
                f"{fp32_path.name}: {problem}"
            )
        return ServedPrecision(
            model_path, "int8", "the file given is int8", released_int8_sha256(fp32_path)
        )
    if precision == "fp32":
        return ServedPrecision(model_path, "fp32", "asked for")
    int8_path = int8_path_for(model_path)
    problem = int8_problem(model_path, int8_path)
    if precision == "auto" and problem is None:
        problem = _int8_hardware_problem(device, cpu_flags)
    if problem is None:
        why = "asked for" if precision == "int8" else "the fastest released (auto)"
        return ServedPrecision(int8_path, "int8", why, released_int8_sha256(model_path))
    if precision == "int8":
        raise PipelineInputError(f"--precision int8: {problem}; use --precision fp32")
    return ServedPrecision(model_path, "fp32", f"auto: {problem}")


def _int8_hardware_problem(device: str, cpu_flags: frozenset[str]) -> str | None:
    if device != "cpu":
        return f"the int8 model is for CPUs, not {device}"
    if not cpu_flags & CPU_INT8_FLAGS:
        return "this CPU has no VNNI or AMX int8 units"
    return None


def _metadata(path: Path) -> dict[str, str]:
    """The ONNX file's metadata; empty when it is absent or unreadable (serving says why)."""
    import onnx

    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - onnx raises protobuf's and its own errors
        return {}
    return metadata_of(model)


def int8_problem(fp32_path: Path, int8_path: Path) -> str | None:
    """Why `int8_path` may not be served for `fp32_path`; None when it may."""
    if not int8_path.is_file():
        return f"no int8 model at {int8_path}"
    if not fp32_path.is_file():
        return f"{fp32_path} does not exist"
    metadata = _metadata(int8_path)
    if not metadata:
        return f"{int8_path} is not a readable ONNX model"
    if REFUSED_KEY in metadata:
        return f"{int8_path} was refused by its gate ({metadata[REFUSED_KEY]})"
    fp32_sha256 = sha256_of_file(fp32_path)
    if metadata.get(QUANTIZED_FROM_KEY) != fp32_sha256:
        return f"{int8_path} was not made from {fp32_path} (another export)"
    # The int8 file's own metadata is its own word: the pair is served only as export
    # recorded it, both hashes in the project's reports/export.json.
    report = export_report_for(fp32_path)
    recorded = _recorded_pair(report)
    if recorded is None:
        return f"no export report ({report}) records an int8 model for {fp32_path}"
    if recorded != (fp32_sha256, sha256_of_file(int8_path)):
        return f"{int8_path} and {fp32_path} are not the pair {report} records"
    return None


def export_report_for(fp32_path: Path) -> Path:
    """The export report of the project a models/model.onnx belongs to: found by where the
    path says the model is, not through links (a link to another project's model must not
    borrow that project's report)."""
    return Path(fp32_path).absolute().parent.parent / EXPORT_REPORT


def released_int8_sha256(fp32_path: Path) -> str | None:
    """The int8 sha256 the export report records as released beside `fp32_path`."""
    recorded = _recorded_pair(export_report_for(fp32_path))
    return recorded[1] if recorded else None


def _sha256_in(section) -> str | None:
    value = section.get("onnx_sha256") if isinstance(section, dict) else None
    return value if isinstance(value, str) else None


def recorded_fp32_sha256(report: Path) -> str | None:
    """The float32 model's sha256 as the export report records it."""
    return _sha256_in(read_json(report))


def _recorded_pair(report: Path) -> tuple[str, str] | None:
    """(float32 sha256, int8 sha256) as the export report records them, the int8 released."""
    content = read_json(report)
    int8 = content.get("int8") if isinstance(content, dict) else None
    fp32_sha256, int8_sha256 = _sha256_in(content), _sha256_in(int8)
    if not isinstance(int8, dict) or int8.get("released") is not True:
        return None
    return (fp32_sha256, int8_sha256) if fp32_sha256 and int8_sha256 else None
