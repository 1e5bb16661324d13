"""Keras model → ONNX, with the normalization inside the graph and the contract in metadata.

The graph's input `image` is uint8 (N, 28, 28), pixels 0..255, whatever the model family: the
graph applies the prepare stage's normalization (the same `Normalization` the training data was
made with) and reshapes, so a caller cannot feed the wrong scale or layout. Its output
`probabilities` is float32 (N, 10).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnistflow.constants import (
    CLASS_NAMES,
    IMAGE_SIZE,
    INPUT_NAME,
    OUTPUT_NAME,
    PIXEL_MAX,
    REFUSED_KEY,
)
from mnistflow.core.hashing import sha256_of_file
from mnistflow.data.normalization import Normalization
from mnistflow.params import ExportParams, ModelName, Params, ValidateParams
from mnistflow.release.gates import (
    AccuracyBaseline,
    ParityReport,
    QualityJudgement,
    Verdict,
    decide,
    parity,
    parity_failures,
    quality_gate,
)
from mnistflow.release.outcomes import Outcomes, outcomes_of

# tf2onnx's counter suffix on the names it generates.
GENERATED_SUFFIX = re.compile(r"__\d+")
INPUT_DESCRIPTION = (
    f"uint8 (N, {IMAGE_SIZE}, {IMAGE_SIZE}), pixels 0..{PIXEL_MAX}, light digit on dark background"
)


def serving_function(model, normalization: Normalization):
    """A tf.function taking uint8 (N, 28, 28) that normalizes and reshapes for `model`."""
    import tensorflow as tf

    model_input_shape = tuple(model.input_shape[1:])
    signature = tf.TensorSpec((None, IMAGE_SIZE, IMAGE_SIZE), tf.uint8, name=INPUT_NAME)

    @tf.function(input_signature=[signature])
    def serve(image):
        inputs = tf.reshape(normalization.apply_tensor(image), (-1, *model_input_shape))
        return {OUTPUT_NAME: model(inputs, training=False)}

    return serve


def convert(model, normalization: Normalization, opset: int, metadata: dict[str, str]):
    """The ONNX ModelProto for `model`, with `metadata` as metadata_props."""
    import tf2onnx

    serve = serving_function(model, normalization)
    # tf2onnx's from_keras fails on Keras 3 models (KeyError 'keras_tensor_…'); a tf.function
    # converts cleanly.
    proto, _ = tf2onnx.convert.from_function(
        serve, input_signature=serve.input_signature, opset=opset
    )
    canonicalize_names(proto.graph)
    for key, value in sorted(metadata.items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = "mnistflow MNIST classifier; see metadata_props for the input contract"
    return proto


def canonicalize_names(graph) -> None:
    """Give the graph's nodes, tensors and constants names that depend on the graph alone.

    tf2onnx numbers the names it generates (`Transpose__31`) from a process-wide counter, and
    which of two equal constants survives its deduplication (`const_axes` or `const_starts`)
    varies, so two conversions of one model differ in bytes (and in DVC hash). Here constants
    are named and ordered by their first use in the (stable) node order, and node outputs
    keep their names without the counter, made unique by order of appearance. The graph's
    input and output names are the contract and stay as they are.
    """
    # "converted from b'__inference_serve_300'": the traced function's counter again.
    graph.doc_string = "converted from the serving tf.function"
    keep = {value.name for value in graph.input} | {value.name for value in graph.output}
    tensors: dict[str, str] = {name: name for name in keep}
    taken = set(keep)
    constants = {initializer.name: initializer for initializer in graph.initializer}
    used = [name for node in graph.node for name in node.input if name in constants]
    order = list(dict.fromkeys(used)) + sorted(set(constants) - set(used))
    for position, name in enumerate(order):
        tensors[name] = _unique(f"constant_{position}", taken)
    ordered = [constants[name] for name in order]
    del graph.initializer[:]
    graph.initializer.extend(ordered)
    for initializer in graph.initializer:
        initializer.name = tensors[initializer.name]

    def tensor(name: str) -> str:
        if name and name not in tensors:
            tensors[name] = _unique(GENERATED_SUFFIX.sub("", name), taken)
        return tensors.get(name, name)

    for node in graph.node:
        node.input[:] = [tensor(name) for name in node.input]
        node.output[:] = [tensor(name) for name in node.output]
    for info in graph.value_info:
        info.name = tensor(info.name)
    node_names: set[str] = set()
    for node in graph.node:
        node.name = _unique(GENERATED_SUFFIX.sub("", node.name), node_names)
    _canonicalize_dimensions([*graph.input, *graph.output, *graph.value_info])


def _canonicalize_dimensions(values) -> None:
    """Symbolic dimensions (`unk__42`) get stable names: the leading one is the batch."""
    symbols: dict[str, str] = {}
    for value in values:
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.dim_param:
                fallback = f"dim_{len(symbols)}"
                dim.dim_param = (
                    "batch" if axis == 0 else symbols.setdefault(dim.dim_param, fallback)
                )


def _unique(base: str, taken: set[str]) -> str:
    candidate, count = base, 1
    while candidate in taken:
        candidate, count = f"{base}__{count}", count + 1
    taken.add(candidate)
    return candidate


def model_metadata(
    params: Params,
    normalization: Normalization,
    inputs: dict[str, Path],
    input_checks: ValidateParams | None = None,
    input_profile: str | None = None,
) -> dict[str, str]:
    """The ONNX file's contract and lineage, from the export stage's declared inputs only:
    the params sections that shaped the model, the sha256 of each file in `inputs`, and the
    input checks (the `validate` bounds validation applied, `input_checks`; params' own when
    not given) that `mnistflow predict` flags inputs against, so the model describes itself
    wherever it is copied. `input_profile` (the reference's, mnistflow/reference/input_profile.py)
    lets predict flag chunks of inputs that drift from the training data."""
    return {
        **({"input_profile": input_profile} if input_profile else {}),
        "class_names": json.dumps(list(CLASS_NAMES)),
        "input_checks": json.dumps((input_checks or params.checks).model_dump(), sort_keys=True),
        "input_name": INPUT_NAME,
        "input_layout": INPUT_DESCRIPTION,
        "input_scale": f"0..{PIXEL_MAX} (uint8); the graph applies the normalization below",
        "normalization": json.dumps(normalization.__dict__, sort_keys=True),
        "output_name": OUTPUT_NAME,
        "params": json.dumps(
            params.model_dump(include={"data", "prepare", "model", "train"}), sort_keys=True
        ),
        "inputs_sha256": json.dumps(
            {name: sha256_of_file(path) for name, path in inputs.items()}, sort_keys=True
        ),
    }


def marked_refused(onnx_bytes: bytes, verdict: Verdict) -> bytes:
    """The model with its refusal in its metadata, so it never passes for a released one."""
    import onnx

    model = onnx.load_model_from_string(onnx_bytes)
    model.metadata_props.add(key=REFUSED_KEY, value=verdict.describe())
    return model.SerializeToString()


@dataclass(frozen=True)
class GatedExport:
    """A converted candidate and everything its gates found."""

    onnx_bytes: bytes
    parity: ParityReport
    quality: QualityJudgement
    outcomes: Outcomes
    verdict: Verdict


def gated_export(
    model,
    normalization: Normalization,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    accuracy: float,
    baseline: AccuracyBaseline | None,
    params: ExportParams,
    model_name: ModelName,
    metadata: dict[str, str],
) -> GatedExport:
    """Conversion, then the gates' verdict: quality (floor and baseline) and parity.

    The candidate is always converted and measured, so a refused model is recorded with the
    same figures as a released one; the verdict says whether it may replace the served model.
    """
    onnx_bytes = convert(model, normalization, params.opset, metadata).SerializeToString()
    report = parity(model, onnx_bytes, test_images, normalization)
    outcomes = outcomes_of(report.onnx_probabilities, test_images, test_labels)
    quality = quality_gate(accuracy, outcomes, baseline, params, model_name)
    verdict = decide(list(quality.reasons), parity_failures(report, params), params)
    return GatedExport(onnx_bytes, report, quality, outcomes, verdict)
