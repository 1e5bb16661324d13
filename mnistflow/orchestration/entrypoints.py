"""How a command-line entry point (a DVC stage) runs: logging, quiet libraries, clear errors."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from mnistflow.errors import PipelineInputError
from mnistflow.orchestration.stderr_filter import filter_stderr, noise_patterns


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main(), turning a PipelineInputError into one paragraph and exit code 2.

    Anything else is a bug and keeps its traceback.
    """
    # Stages import TensorFlow lazily, so this takes effect; it hides TF's C++ info chatter
    # once absl's logging is up (errors still show). What comes before is filtered here:
    filter_stderr(noise_patterns())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Libraries' own INFO chatter (GX logs every internal registration, tf2onnx each pass)
    # hides the stage's.
    for library in ("great_expectations", "tf2onnx"):
        logging.getLogger(library).setLevel(logging.WARNING)
    try:
        main()
    except PipelineInputError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
