"""TensorFlow's start-up noise leaves a stage's stderr; every other byte passes, even when the
stage is killed, and progress bars redraw as they are drawn."""

from __future__ import annotations

import subprocess
import sys

from mnistflow.orchestration.stderr_filter import noise_patterns
from tests.project_root import PROJECT_ROOT

NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795426298.598479   14118 port.cc:153] oneDNN custom operations are on. You "
    "may see slightly different numerical results",
    "I0000 00:00:1795426298.600213   14118 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.",
    "E0000 00:00:1795426301.814387   14118 cuda_platform.cc:52] failed call to cuInit: "
    "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
]
REAL = [
    "E0000 00:00:1795426301.814390   14118 op_kernel.cc:1830] OP_REQUIRES failed: OOM",
    "error: data/raw/mnist.npz: missing",
]


def stage_writing(lines: list[str], ending: str = "", driver: str = "/nonexistent") -> str:
    """A process that filters its stderr as a stage does, then writes `lines` to fd 2."""
    return (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from mnistflow.orchestration.stderr_filter import filter_stderr, noise_patterns\n"
        f"filter_stderr(noise_patterns(Path({driver!r})))\n"
        f"for line in {lines!r}:\n"
        "    os.write(2, (line + '\\n').encode())\n"
        "os.write(2, b'epoch 1 10%\\repoch 1 50%\\repoch 1 100%\\n')\n" + ending
    )


def run(code: str) -> subprocess.CompletedProcess:
    # Bytes: text mode would turn the progress bar's \r into \n.
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, timeout=60,
        check=False,
    )  # fmt: skip
    result.stderr = result.stderr.decode()
    return result


def test_noise_is_dropped_and_everything_else_passes():
    result = run(stage_writing([*NOISE[:2], REAL[0], *NOISE[2:], REAL[1]]))
    assert result.returncode == 0
    assert result.stderr == f"{REAL[0]}\n{REAL[1]}\nepoch 1 10%\repoch 1 50%\repoch 1 100%\n"


def test_a_killed_stage_loses_no_line():
    result = run(stage_writing(REAL, ending="os.kill(os.getpid(), 9)\n"))
    assert result.returncode == -9
    assert REAL[0] in result.stderr and REAL[1] in result.stderr


def test_ctrl_c_reaches_the_stage_and_its_last_words_are_kept():
    import os
    import signal

    code = stage_writing(
        REAL,
        ending=(
            "import time\n"
            "try:\n"  # ready is printed inside: the interrupt may come at once
            "    print('ready', flush=True)\n"
            "    time.sleep(60)\n"
            "except KeyboardInterrupt:\n"
            "    print('error: interrupted', file=sys.stderr)\n"
            "    sys.exit(130)\n"
        ),
    )
    # A shell's background job (`make test &`) ignores SIGINT and children inherit that; a
    # terminal's foreground stage does not, so the stage starts with the default disposition.
    stage = subprocess.Popen(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert stage.stdout.readline() == b"ready\n"
    os.killpg(stage.pid, signal.SIGINT)  # what a terminal's Ctrl-C does to its foreground
    _, stderr = stage.communicate(timeout=60)
    assert stage.returncode == 130
    assert stderr.decode().splitlines()[-1] == "error: interrupted"
    assert REAL[0] in stderr.decode()


def test_cuda_errors_show_where_an_nvidia_driver_is_installed(tmp_path):
    driver = tmp_path / "version"
    driver.write_text("NVRM version: 550.54")
    assert not any("cuInit" in pattern for pattern in noise_patterns(driver))
    result = run(stage_writing(NOISE, driver=str(driver)))
    assert "failed call to cuInit" in result.stderr and "cuda drivers" in result.stderr
    assert "oneDNN" not in result.stderr and "absl::InitializeLog" not in result.stderr


def test_patterns_that_would_drop_every_line_are_refused():
    import pytest

    from mnistflow.orchestration.stderr_filter import filter_stderr

    for patterns in [(), ("",), ("x*",)]:
        with pytest.raises(ValueError, match="match no empty line"):
            filter_stderr(patterns)
