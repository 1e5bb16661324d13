"""Label quality: how many labels disagree with their images, estimated out of sample.

The reference holds the label model (`reference/label_model.*`, chosen when the reference
was accepted, see `mnistflow.reference.acceptance`), never this run's own model, which would
make a cycle in DVC's graph and would have learned the very labels it judges:
- `label_model.onnx`: the released model of the accepted data (onnxruntime over every image);
- `label_model.npz`: K small MLPs cross-fitted on the accepted data, each trained without one
  fold. An image of the accepted training set (found by its exact content hash) is scored by
  the model that never saw it; any other image by the mean of all K.

With out-of-sample class probabilities, confident learning (cleanlab) counts per class the
examples whose given label is unlikely under the model (the confident joint) and estimates the
number of label errors; the check compares that rate with `validate.labels.max_error_rate`.
A label column shifted by one row, random label noise and two swapped classes all raise it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnistflow.constants import NUM_CLASSES
from mnistflow.core.hashing import image_digests
from mnistflow.core.onnx_runs import batched_outputs, cpu_session
from mnistflow.data.pixels import uint8_pixels, unit_floats
from mnistflow.errors import PipelineInputError

logger = logging.getLogger(__name__)

LABEL_ONNX_MODEL = "label_model.onnx"
LABEL_FOLD_MODELS = "label_model.npz"
SUSPICIOUS_KEPT = 64  # most suspicious examples listed (and drawn in the report) per split


def exact_hashes(images: np.ndarray) -> np.ndarray:
    """A 64-bit content hash per image: finds accepted training images among new data."""
    return np.array(
        [int.from_bytes(digest, "little") for digest in image_digests(images, 8)], dtype=np.uint64
    )


@dataclass(frozen=True)
class FoldModels:
    """K MLPs (relu hidden layers, softmax out) as weight arrays, and which training image
    (by exact hash) each fold held out."""

    layers: list[list[tuple[np.ndarray, np.ndarray]]]  # per fold: (weights, bias) per layer
    held_out_hashes: np.ndarray  # uint64, sorted
    held_out_folds: np.ndarray  # fold index of each hash

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        inputs = unit_floats(images).reshape(len(images), -1)
        folds = self.held_out_folds_of(images)
        result = np.zeros((len(images), NUM_CLASSES), np.float32)
        unseen = folds < 0
        for fold, layers in enumerate(self.layers):
            chosen = unseen | (folds == fold)
            if not chosen.any():
                continue
            probabilities = _mlp_forward(inputs[chosen], layers)
            weights = np.where(unseen[chosen], 1.0 / len(self.layers), 1.0)[:, None]
            result[chosen] += (probabilities * weights).astype(np.float32)
        return result

    def held_out_folds_of(self, images: np.ndarray) -> np.ndarray:
        """Per image, the fold that held it out, or -1 for an image the folds never saw."""
        hashes = exact_hashes(images)
        position = np.clip(
            np.searchsorted(self.held_out_hashes, hashes), 0, len(self.held_out_hashes) - 1
        )
        found = (
            self.held_out_hashes[position] == hashes
            if len(self.held_out_hashes)
            else np.zeros(len(hashes), bool)
        )
        return np.where(found, self.held_out_folds[position], -1)

    def save(self, path: Path) -> None:
        arrays: dict[str, np.ndarray] = {
            "held_out_hashes": self.held_out_hashes,
            "held_out_folds": self.held_out_folds,
        }
        for fold, layers in enumerate(self.layers):
            for index, (weights, bias) in enumerate(layers):
                arrays[f"fold{fold}/layer{index}/weights"] = weights
                arrays[f"fold{fold}/layer{index}/bias"] = bias
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)

    @classmethod
    def load(cls, path: Path) -> FoldModels:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        folds = sorted({int(key.split("/")[0][4:]) for key in arrays if key.startswith("fold")})
        layers = []
        for fold in folds:
            count = len({key.split("/")[1] for key in arrays if key.startswith(f"fold{fold}/")})
            layers.append(
                [
                    (arrays[f"fold{fold}/layer{i}/weights"], arrays[f"fold{fold}/layer{i}/bias"])
                    for i in range(count)
                ]
            )
        return cls(layers, arrays["held_out_hashes"], arrays["held_out_folds"])


def _mlp_forward(inputs: np.ndarray, layers: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    activations = inputs
    for index, (weights, bias) in enumerate(layers):
        activations = activations @ weights + bias
        if index < len(layers) - 1:
            activations = np.maximum(activations, 0.0)
    activations = activations - activations.max(axis=1, keepdims=True)
    exponentials = np.exp(activations)
    return exponentials / exponentials.sum(axis=1, keepdims=True)


class OnnxLabelModel:
    """The released model of the accepted data, run by onnxruntime."""

    def __init__(self, path: Path) -> None:
        self.session = cpu_session(Path(path).read_bytes())

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        return batched_outputs(self.session, uint8_pixels(images), 1024, NUM_CLASSES)


def load_label_model(folder: Path):
    """The reference's label model, or None when it has none."""
    folder = Path(folder)
    try:
        if (folder / LABEL_ONNX_MODEL).is_file():
            return OnnxLabelModel(folder / LABEL_ONNX_MODEL)
        if (folder / LABEL_FOLD_MODELS).is_file():
            return FoldModels.load(folder / LABEL_FOLD_MODELS)
    except Exception as error:  # onnxruntime and numpy raise many kinds for a damaged file
        raise PipelineInputError(
            f"{folder}: cannot load the reference's label model ({type(error).__name__}: "
            f"{error}); accept the reference again with `mnistflow reference accept`"
        ) from None
    return None


def label_model_kind(folder: Path) -> str | None:
    folder = Path(folder)
    if (folder / LABEL_ONNX_MODEL).is_file():
        return "released model"
    if (folder / LABEL_FOLD_MODELS).is_file():
        return "cross-validated MLPs"
    return None


@dataclass(frozen=True)
class LabelQuality:
    split: str
    examples: int
    disagreements: int  # argmax differs from the given label
    estimated_errors: int  # confident learning's estimate of mislabelled examples
    per_class: list[int]  # confident-joint off-diagonal count per given label
    suspicious: list[int]  # indices, most suspicious first
    suspicious_predicted: list[int]  # the model's class for each of them

    @property
    def error_rate(self) -> float:
        return round(self.estimated_errors / self.examples, 6) if self.examples else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "estimated_errors": self.estimated_errors,
            "estimated_error_rate": self.error_rate,
            "disagreement_rate": round(self.disagreements / self.examples, 6)
            if self.examples
            else 0.0,
            "per_class": self.per_class,
            "suspicious": self.suspicious,
            "suspicious_predicted": self.suspicious_predicted,
        }


def assess_labels(split: str, labels: np.ndarray, probabilities: np.ndarray) -> LabelQuality:
    """Confident learning on one split's labels and out-of-sample probabilities."""
    from cleanlab.count import compute_confident_joint, num_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = np.asarray(labels).astype(np.int64)
    probabilities = _clean_probabilities(probabilities)
    joint = compute_confident_joint(labels, probabilities)
    per_class = (joint.sum(axis=1) - np.diag(joint)).astype(int).tolist()
    estimated = int(num_label_issues(labels, probabilities))
    predicted = probabilities.argmax(axis=1)
    scores = get_label_quality_scores(labels, probabilities)
    disagreeing = np.flatnonzero(predicted != labels)
    order = disagreeing[np.argsort(scores[disagreeing], kind="stable")][:SUSPICIOUS_KEPT]
    return LabelQuality(
        split=split,
        examples=len(labels),
        disagreements=int(len(disagreeing)),
        estimated_errors=estimated,
        per_class=per_class,
        suspicious=order.tolist(),
        suspicious_predicted=predicted[order].tolist(),
    )


def _clean_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """Rows summing to 1 in float64 (cleanlab checks this; float32 softmax drifts by ~1e-7)."""
    values = np.clip(np.asarray(probabilities, np.float64), 1e-12, None)
    return values / values.sum(axis=1, keepdims=True)
