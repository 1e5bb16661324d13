"""The reference's training-split profile as the exported model carries it (`input_profile`
in its ONNX metadata), so `mnistflow predict` can judge each chunk of inputs for drift without
the project's reference folder.

Only numpy and json here: export embeds it, and the export stage's closure stays small.
Reading it back into a profile for the drift measures is `mnistflow.reference.drift.batch_drift`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mnistflow.errors import PipelineInputError
from mnistflow.reference.drift import MIN_DRIFT_IMAGES

HISTOGRAM_NAMES = ("intensity", "ink", "aspect")


def input_profile_metadata(reference: Path, thresholds: dict[str, float]) -> str:
    """JSON: the reference's train-split mean image, histograms and centre, the drift
    thresholds, and the smallest chunk judged."""
    path = Path(reference) / "profile.npz"
    try:
        with np.load(path, allow_pickle=False) as archive:
            content: dict[str, Any] = {
                "mean_image": np.round(archive["train/mean_image"], 3).tolist(),
                "histograms": {
                    name: archive[f"train/hist_{name}"].tolist() for name in HISTOGRAM_NAMES
                },
                "centre": [round(float(value), 6) for value in archive["train/centre"]],
            }
    except (OSError, KeyError, ValueError) as error:
        raise PipelineInputError(
            f"{path}: no readable reference profile ({type(error).__name__}: {error}); "
            "accept one with `mnistflow reference accept`"
        ) from None
    content["thresholds"] = thresholds
    content["min_images"] = MIN_DRIFT_IMAGES
    return json.dumps(content, sort_keys=True)
