"""onnxruntime on the CPU for the pipeline's own judgements (the export gates, the int8 gate,
the label model): a quiet session made from model bytes, run over many images in batches."""

from __future__ import annotations

import numpy as np


def cpu_session(model_bytes: bytes):
    """An onnxruntime session on the CPU for `model_bytes`, its start-up warnings silenced."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(
        model_bytes, sess_options=options, providers=["CPUExecutionProvider"]
    )


def batched_outputs(session, images: np.ndarray, batch: int, width: int) -> np.ndarray:
    """The session's first output for `images`, run `batch` images at a time; (0, width) for
    no images."""
    input_name = session.get_inputs()[0].name
    output_name = session.get_outputs()[0].name
    outputs = [
        session.run([output_name], {input_name: images[start : start + batch]})[0]
        for start in range(0, len(images), batch)
    ]
    return np.concatenate(outputs) if outputs else np.zeros((0, width), np.float32)
