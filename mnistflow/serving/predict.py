"""Batch prediction with onnxruntime: streaming, chunked, with flags for suspicious inputs.

Inputs are read, checked and predicted a chunk at a time and rows are appended to the
output as they come (CSV, or Parquet when the name ends in .parquet), so memory stays flat
whatever the input size. The output is written to a temporary file and renamed at the end.

Inputs that cannot be read or trusted get a row too, with the reason in the `error` column and
no prediction: predictions and errors are one file, replaced in one rename, so they can never
come from two different runs. The output location is checked before any work.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnistflow.constants import NUM_CLASSES, REFUSED_KEY
from mnistflow.core.atomic import atomic_file
from mnistflow.data.pixels import uint8_pixels
from mnistflow.errors import PipelineInputError
from mnistflow.params import ValidateParams
from mnistflow.reference.drift import batch_drift
from mnistflow.serving.inputs import expand_inputs, iter_chunks
from mnistflow.validation.summaries import flag_images

logger = logging.getLogger(__name__)

OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
# The version a model without a registry entry reports (the registry names released ones).
UNREGISTERED = "unregistered"
LINEAGE_COLUMNS = ("model_version", "model_sha256")


def _input_checks(metadata: dict[str, str], model_path: Path) -> ValidateParams | None:
    """The `validate` bounds the export stage embedded, None for a model without them."""
    if "input_checks" not in metadata:
        return None
    try:
        return ValidateParams.model_validate(json.loads(metadata["input_checks"]))
    except ValueError as error:
        raise PipelineInputError(
            f"{model_path}: metadata input_checks is not a valid validate section ({error})"
        ) from None


@dataclass(frozen=True)
class SessionOptions:
    # 0 lets onnxruntime use one thread per physical core.
    intra_op_threads: int = 0
    optimization: str = "all"
    device: str = "cpu"  # cpu | cuda


def _input_profile(metadata: dict[str, str], model_path: Path) -> dict | None:
    """The reference profile the model carries for drift flags (models exported before it
    existed have none)."""
    if "input_profile" not in metadata:
        return None
    try:
        profile = json.loads(metadata["input_profile"])
        for key in ("mean_image", "histograms", "centre", "thresholds", "min_images"):
            profile[key]  # noqa: B018 - presence check
        return profile
    except (ValueError, KeyError, TypeError) as error:
        raise PipelineInputError(
            f"{model_path}: metadata input_profile is not a valid profile ({error})"
        ) from None


@dataclass
class PredictionSummary:
    images: int = 0
    seconds: float = 0.0
    flagged: int = 0
    # Chunks whose inputs drift from the training data (the model's input_profile), of all.
    drifting_chunks: int = 0
    judged_chunks: int = 0
    class_counts: list[int] = field(default_factory=lambda: [0] * NUM_CLASSES)
    errors: list[tuple[str, str]] = field(default_factory=list)
    provider: str = ""
    model_version: str = ""
    model_sha256: str = ""

    def add_chunk(self, rows: dict, predicted: np.ndarray, drifting: list[str] | None) -> None:
        """Count one predicted chunk: images, flags, classes, and its drift verdict."""
        self.judged_chunks += drifting is not None
        self.drifting_chunks += bool(drifting)
        self.images += len(predicted)
        self.flagged += sum(1 for flag in rows["flagged"] if flag)
        for digit, count in enumerate(np.bincount(predicted, minlength=NUM_CLASSES)):
            self.class_counts[digit] += int(count)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0

    def _drift_line(self) -> str:
        return f"{self.drifting_chunks} of {self.judged_chunks} chunks drift from the training data"

    def lines(self) -> list[str]:
        histogram = "  ".join(f"{digit}:{count}" for digit, count in enumerate(self.class_counts))
        return [
            f"{self.images} images in {self.seconds:.2f} s ({self.images_per_second:,.0f} "
            f"images/s) on {self.provider}",
            f"predicted classes  {histogram}",
            f"{self.flagged} flagged by the input checks, {len(self.errors)} unreadable input(s)",
            *([self._drift_line()] if self.judged_chunks else []),
            f"model {self.model_version} (sha256 {self.model_sha256[:16]}…)",
        ]


def verified_model_bytes(path: Path, expected_sha256: str | None) -> tuple[bytes, str]:
    """The model file's bytes and their sha256, read once; PipelineInputError when the file is
    missing or its hash is not the expected one (replaced, half-written or corrupt)."""
    if not Path(path).is_file():
        raise PipelineInputError(f"{path}: ONNX model not found; run `dvc repro export`")
    content = Path(path).read_bytes()
    digest = hashlib.sha256(content).hexdigest()
    if expected_sha256 and digest != expected_sha256:
        raise PipelineInputError(
            f"{path}: sha256 {digest} differs from the expected {expected_sha256}; the model "
            "was replaced, is half-written or corrupt, and is not served"
        )
    return content, digest


def _session(model_bytes: bytes, options: SessionOptions, model_path: Path):
    """(an onnxruntime session for the bytes, the provider it really runs on)."""
    import onnxruntime

    session_options = onnxruntime.SessionOptions()
    session_options.intra_op_num_threads = options.intra_op_threads
    session_options.graph_optimization_level = {
        "disable": onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[options.optimization]
    wanted = ["CPUExecutionProvider"]
    if options.device == "cuda":
        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            logger.warning("CUDA asked for but onnxruntime has no CUDA provider; using CPU")
    try:
        session = onnxruntime.InferenceSession(
            model_bytes, sess_options=session_options, providers=wanted
        )
    except Exception as error:  # noqa: BLE001 - onnxruntime's errors share no base class
        raise PipelineInputError(
            f"{model_path}: not a readable ONNX model ({type(error).__name__}: {error})"
        ) from None
    # A session can fall back silently; trust only what it reports.
    provider = session.get_providers()[0]
    if provider != wanted[0]:
        raise RuntimeError(f"asked for {wanted[0]} but the session runs on {provider}")
    return session, provider


class Predictor:
    """An onnxruntime session for a model exported by the export stage.

    The session is made from the very bytes that were hashed (never re-read from the path), so
    `sha256` names exactly the model that predicts, and `expected_sha256` can pin it. The model
    carries its own contract in its metadata: names, classes, version, and the input checks
    (the `validate` bounds it was trained under) that flag suspicious inputs.
    """

    def __init__(
        self,
        model_path: Path,
        options: SessionOptions = SessionOptions(),
        expected_sha256: str | None = None,
        version: str | None = None,
    ) -> None:
        """`version` names the model when it came from the registry (its tag's version)."""
        if options.optimization not in OPTIMIZATION_LEVELS:
            raise PipelineInputError(
                f"optimization {options.optimization!r}: expected one of {OPTIMIZATION_LEVELS}"
            )
        model_bytes, self.sha256 = verified_model_bytes(Path(model_path), expected_sha256)
        self.session, self.provider = _session(model_bytes, options, model_path)
        metadata = self.session.get_modelmeta().custom_metadata_map
        if REFUSED_KEY in metadata:
            raise PipelineInputError(
                f"{model_path}: the export gates refused this model ({metadata[REFUSED_KEY]}); "
                "it was written only because no model existed yet, and is not served"
            )
        input_type = self.session.get_inputs()[0].type
        if input_type != "tensor(uint8)":
            raise PipelineInputError(
                f"{model_path}: input type {input_type}; expected tensor(uint8) as the export "
                "stage writes"
            )
        self.input_name = metadata.get("input_name", self.session.get_inputs()[0].name)
        self.output_name = metadata.get("output_name", self.session.get_outputs()[0].name)
        self.class_names = json.loads(
            metadata.get("class_names", json.dumps(list(range(NUM_CLASSES))))
        )
        self.version = version or metadata.get("model_version", UNREGISTERED)
        self.input_checks = _input_checks(metadata, model_path)
        self.input_profile = _input_profile(metadata, model_path)

    def lineage(self) -> dict[str, str]:
        """What every output row says about the model that made it."""
        return {"model_version": self.version, "model_sha256": self.sha256}

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """(n, 10) for (n, 28, 28) images, uint8 0..255 or float 0..1."""
        return self.session.run([self.output_name], {self.input_name: uint8_pixels(images)})[0]


OUTPUT_SUFFIXES = (".csv", ".parquet")
# Cells a spreadsheet would run as a formula (OWASP's CSV injection list).
FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: str) -> str:
    """`text` as a CSV cell that no spreadsheet evaluates: a formula lead is quoted with '."""
    return f"'{text}" if text.startswith(FORMULA_LEADS) else text


def check_output(output: Path, inputs: list[Path]) -> None:
    """Refuse, before any work, an output that is a folder, of an unknown kind, not writable,
    or one of the inputs."""
    output = Path(output)
    if output.is_dir():
        raise PipelineInputError(f"{output}: is a folder; expected a .csv or .parquet file name")
    if not output.name.endswith(OUTPUT_SUFFIXES):
        raise PipelineInputError(
            f"{output}: unknown output kind; expected a name ending in .csv or .parquet"
        )
    if output.exists():
        for source in inputs:
            if source.exists() and source.samefile(output):
                raise PipelineInputError(
                    f"{output}: is one of the inputs; refusing to write predictions over it"
                )
    parent = output.parent if str(output.parent) else Path(".")
    existing = next(p for p in (parent, *parent.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PipelineInputError(f"{output}: cannot write in {existing}")


def _csv_column(column: str, values) -> list:
    """One column's CSV cells: probabilities with 6 decimals, every text cell made
    spreadsheet-safe whatever its column (a model's own metadata, such as its version, is as
    untrusted as a file name), missing values (a quarantined input's prediction) empty."""
    if column == "probability" or column.endswith("prob"):
        return ["" if value is None else f"{value:.6f}" for value in values]
    return [
        "" if value is None else spreadsheet_safe(value) if isinstance(value, str) else value
        for value in values
    ]


def _top_k_columns(k: int) -> list[str]:
    return [name for rank in range(1, k + 1) for name in (f"top{rank}_class", f"top{rank}_prob")]


class _RowWriter:
    """Append-only CSV or Parquet writer with one schema."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        self.parquet = path.name.endswith(".parquet")
        self.columns = columns
        if self.parquet:
            import pyarrow as pa
            import pyarrow.parquet as pq

            types = {
                "source": pa.string(),
                "predicted": pa.int64(),
                "probability": pa.float32(),
                "flagged": pa.string(),
                "error": pa.string(),
                "model_version": pa.string(),
                "model_sha256": pa.string(),
            }
            schema = pa.schema(
                [
                    (name, types.get(name, pa.int64() if "class" in name else pa.float32()))
                    for name in columns
                ]
            )
            self.schema = schema
            self.writer = pq.ParquetWriter(path, schema)
        else:
            self.handle = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115
            self.writer = csv.writer(self.handle)
            self.writer.writerow(columns)

    def write(self, table: dict[str, list | np.ndarray]) -> None:
        if self.parquet:
            import pyarrow as pa

            self.writer.write_table(pa.table(table, schema=self.schema))
        else:
            cells = [_csv_column(name, table[name]) for name in self.columns]
            self.writer.writerows(zip(*cells, strict=True))

    def write_errors(self, errors: list[tuple[str, str]], lineage: dict[str, str]) -> None:
        """One row per quarantined input: its source and reason, no prediction."""
        if errors:
            table: dict[str, list] = {name: [None] * len(errors) for name in self.columns}
            table["source"] = [source for source, _ in errors]
            table["error"] = [reason for _, reason in errors]
            for name, value in lineage.items():
                table[name] = [value] * len(errors)
            self.write(table)

    def close(self) -> None:
        if self.parquet:
            self.writer.close()
        else:
            self.handle.close()


def predict_chunks(
    predictor: Predictor,
    chunks: Iterator,
    top_k: int,
    params: ValidateParams,
) -> Iterator[tuple[dict[str, list | np.ndarray], np.ndarray, list[str] | None]]:
    """Per chunk: the output rows as columns, the predicted classes, and the drift measures
    over threshold (None when the chunk was not judged: no profile, or too few images)."""
    for chunk in chunks:
        probabilities = predictor.probabilities(chunk.images)
        ranked = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
        ranked_probabilities = np.take_along_axis(probabilities, ranked, axis=1)
        rows: dict[str, list | np.ndarray] = {
            "source": chunk.sources,
            "predicted": ranked[:, 0],
            "probability": ranked_probabilities[:, 0],
        }
        for rank in range(top_k):
            rows[f"top{rank + 1}_class"] = ranked[:, rank]
            rows[f"top{rank + 1}_prob"] = ranked_probabilities[:, rank]
        rows["flagged"] = flag_images(chunk.images, params)
        drifting = None
        if predictor.input_profile is not None:
            drifting = batch_drift(chunk.images, predictor.input_profile)
            if drifting:
                # Drift is a property of the chunk: every row in it carries the measure.
                marks = ";".join(f"drift_{name}" for name in drifting)
                rows["flagged"] = [f"{flag};{marks}" if flag else marks for flag in rows["flagged"]]
        rows["error"] = [None] * len(chunk.sources)
        for name, value in predictor.lineage().items():
            rows[name] = [value] * len(chunk.sources)
        yield rows, ranked[:, 0], drifting


def predict_files(
    inputs: list[Path],
    model_path: Path,
    output: Path,
    top_k: int = 3,
    chunk_size: int = 1024,
    options: SessionOptions = SessionOptions(),
    params: ValidateParams | None = None,
    progress: bool = True,
    expected_sha256: str | None = None,
    predictor: Predictor | None = None,
    model_version: str | None = None,
) -> PredictionSummary:
    """Predict every input image into `output`, with a row per quarantined input (its reason
    in `error`) and the model's version and sha256 on every row. Usage errors (options, model,
    output, missing inputs) raise PipelineInputError before any work.

    Inputs are flagged against `params`, else the bounds embedded in the model, else MNIST's.
    `predictor` reuses an open session (the flow's shards share one per worker)."""
    from tqdm import tqdm

    if not 1 <= top_k <= NUM_CLASSES:
        raise PipelineInputError(f"top_k {top_k}: expected 1..{NUM_CLASSES}")
    if chunk_size < 1:
        raise PipelineInputError(f"chunk_size {chunk_size}: expected a positive number of images")
    check_output(output, expand_inputs(inputs))
    predictor = predictor or Predictor(model_path, options, expected_sha256, model_version)
    params = params or predictor.input_checks or ValidateParams()
    summary = PredictionSummary(
        provider=predictor.provider,
        model_version=predictor.version,
        model_sha256=predictor.sha256,
    )
    columns = ["source", "predicted", "probability", *_top_k_columns(top_k), "flagged", "error",
               *LINEAGE_COLUMNS]  # fmt: skip
    started = time.perf_counter()
    suffix = ".parquet" if output.name.endswith(".parquet") else ".csv"
    with atomic_file(output, suffix=suffix) as temporary:
        writer = _RowWriter(temporary, columns)
        with (
            contextlib.closing(writer),
            tqdm(unit="img", disable=not progress, desc="predict") as bar,
        ):
            chunks = iter_chunks(inputs, chunk_size, summary.errors)
            for rows, predicted, drifting in predict_chunks(predictor, chunks, top_k, params):
                writer.write(rows)
                summary.add_chunk(rows, predicted, drifting)
                bar.update(len(predicted))
            writer.write_errors(summary.errors, predictor.lineage())
    summary.seconds = time.perf_counter() - started
    return summary


@functools.lru_cache(maxsize=4)
def cached_predictor(
    model_path: str,
    expected_sha256: str,
    version: str | None = None,
    options: SessionOptions = SessionOptions(),
) -> Predictor:
    """One session per process for a given model: the flow's shards that land on one worker
    reuse it instead of loading the model again. Keyed by the model's sha256, so a changed
    file can never be served from the cache under its old identity."""
    return Predictor(Path(model_path), options, expected_sha256, version)
