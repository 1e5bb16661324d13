"""The project's well-known paths, relative to its root, as git and dvc.lock write them.

The DVC stages take their paths from dvc.yaml's command lines only; these are for the code that
reads the pipeline's outputs back (records, the registry, verify, serving, reports) or owns a
place of its own (the inbox, the locks). One home, so a renamed output is renamed once.
"""

from __future__ import annotations

PARAMS = "params.yaml"
DVC_YAML = "dvc.yaml"
DVC_LOCK = "dvc.lock"
PRESETS = "presets.yaml"
PREFECT_YAML = "prefect.yaml"
RAW_DATA = "data/raw/mnist.npz"
# The accepted reference (validate's), and the quality gate's baseline (export's).
REFERENCE = "reference"
BASELINE = "release/baseline.json"
# What each registry version points at: the stamped copy of the export, in its record.
REGISTERED_MODEL = "release/model.onnx"
MODELS = "models"
ONNX_MODEL = f"{MODELS}/model.onnx"
INT8_MODEL = f"{MODELS}/model.int8.onnx"
REPORTS = "reports"
METRICS = f"{REPORTS}/metrics.json"
EXPORT_REPORT = f"{REPORTS}/export.json"
VALIDATION_REPORT = f"{REPORTS}/validation.json"
TRAIN_REPORT = f"{REPORTS}/train.json"
TEST_PREDICTIONS = f"{REPORTS}/test_predictions.csv"
TEST_OUTCOMES = f"{REPORTS}/test_outcomes.json"
COMPUTE_FINGERPRINT = f"{REPORTS}/compute.json"
HTML_REPORT = f"{REPORTS}/report.html"
# `dvc plots show`'s page template with Vega inline (.dvc/config names it).
PLOTS_TEMPLATE = ".dvc/plots-offline.html"
# The project's own Prefect home (server database, the local server's record).
PREFECT_HOME = ".prefect"
# The deployed inbox: where files arrive, and where their predictions are committed.
INBOX = "data/inbox"
INBOX_PREDICTIONS = "predictions/inbox"
# Locks live in DVC's own scratch folder, out of every data and output folder.
WRITER_LOCK = ".dvc/tmp/mnistflow-writer.lock"
INBOX_LOCKS = ".dvc/tmp/inbox-locks"
