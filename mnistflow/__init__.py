"""mnistflow: a reproducible, orchestrated Keras training pipeline for MNIST."""

from pathlib import Path

# Every path the project writes is relative to the repository root, where dvc.yaml lives.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
