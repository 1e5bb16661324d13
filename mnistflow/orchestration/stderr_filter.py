"""Known-harmless start-up lines of TensorFlow's C++ runtime, dropped from a stage's stderr.

TensorFlow logs through absl before its log level applies, so TF_CPP_MIN_LOG_LEVEL does not
silence them: every stage that imports it on a machine without a GPU prints the oneDNN notice,
"Could not find cuda drivers" and `E0000 … failed call to cuInit: INTERNAL: CUDA error`, which
a user reads as a failure. The stage's stderr goes through a filter process that drops exactly
these lines — the CUDA ones only where no NVIDIA driver is installed, so a GPU machine's CUDA
errors still show — and passes every other byte through unchanged.

A separate process rather than a thread: it drains the pipe to the end even when the stage
dies abruptly (it ends when the last writer closes the pipe), so no real error is lost.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
import sys
from pathlib import Path

# Whole-line patterns; glog's prefix is `<severity><MMDD> <time> <thread> <file>:<line>] `.
GLOG = r"^[IWE]\d{4} [\d:.]+ +\d+ "
ALWAYS_NOISE = (
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    GLOG + r"port\.cc:\d+\] oneDNN custom operations are on",
)
# What TensorFlow's CUDA build says on a machine without an NVIDIA driver.
NO_GPU_NOISE = (
    GLOG + r"cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine",
    GLOG + r"cuda_platform\.cc:\d+\] failed call to cuInit: ",
    GLOG + r"cuda_executor\.cc:\d+\] failed call to cuInit: ",
    GLOG + r"\w+\.cc:\d+\] Unable to register cu(DNN|FFT|BLAS) factory",
    GLOG + r"\w+\.cc:\d+\] TF-TRT Warning: Could not find TensorRT",
)
NVIDIA_DRIVER_VERSION = Path("/proc/driver/nvidia/version")
# Splits on \n and \r, so a progress bar redrawing its line passes through as it is drawn;
# a partial line is written out once nothing more arrives for 0.2 s. It ignores the signals a
# terminal sends the stage (Ctrl-C must not cut the stage's last words) and ends at EOF; if
# anything in it fails, it passes everything through unfiltered.
FILTER_PROGRAM = r"""
import os, re, select, signal, sys
for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
    signal.signal(number, signal.SIG_IGN)
out = sys.stdout.buffer
pending = b""
try:
    noise = re.compile("|".join(sys.argv[1:]))
    while True:
        ready, _, _ = select.select([0], [], [], 0.2 if pending else None)
        if not ready:
            out.write(pending)
            out.flush()
            pending = b""
            continue
        chunk = os.read(0, 65536)
        if not chunk:
            break
        *complete, pending = re.split(rb"(?<=[\r\n])", pending + chunk)
        for segment in complete:
            if not noise.search(segment.decode("utf-8", "replace")):
                out.write(segment)
        out.flush()
except Exception:
    while True:
        out.write(pending)
        out.flush()
        pending = os.read(0, 65536)
        if not pending:
            break
out.write(pending)
out.flush()
"""


def noise_patterns(nvidia_driver: Path = NVIDIA_DRIVER_VERSION) -> tuple[str, ...]:
    return ALWAYS_NOISE + (() if nvidia_driver.exists() else NO_GPU_NOISE)


def filter_stderr(patterns: tuple[str, ...]) -> None:
    """From now on, file descriptor 2 of this process (and of its children) goes through a
    filter process dropping lines that match `patterns`; at exit it is drained first."""
    import re

    if not patterns or any(re.fullmatch(pattern, "") for pattern in patterns):
        raise ValueError(f"noise patterns must be given and match no empty line: {patterns!r}")
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    # -I -S: isolated (no PYTHON* variables, no working directory on the path), no
    # site-packages; it starts in milliseconds and imports nothing of ours. Its own session:
    # a terminal's Ctrl-C reaches the stage, not the filter carrying its messages.
    process = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", FILTER_PROGRAM, *patterns],
        stdin=read_end,
        stdout=original,
        start_new_session=True,
    )
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)

    def drain() -> None:
        # The pipe's last writer goes, the filter writes what is left and ends; then the
        # caller (DVC) prints its next line after ours, not among them.
        sys.stderr.flush()
        os.dup2(original, 2)
        # Past the timeout, a child of the stage still holds the pipe; it drains when that ends.
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)

    atexit.register(drain)
