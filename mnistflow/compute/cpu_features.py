"""The CPU: its model name and instruction-set flags, as Linux names them in /proc/cpuinfo.

Training picks bf16 on CPUs with native bf16 matrix units (mnistflow/training/device.py) and
serving picks the int8 model on CPUs with integer dot-product units
(mnistflow/release/quantization.py); both ask here, and the logs and the report show them.
"""

from __future__ import annotations

import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def _cpuinfo_line(key: str, cpuinfo: Path) -> str | None:
    """The value of the first `key` line of /proc/cpuinfo; None where it is absent."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(key):
            return line.split(":", 1)[1].strip()
    return None


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    return _cpuinfo_line("model name", cpuinfo) or platform.processor() or platform.machine()


def detect_cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The CPU's feature flags; empty where /proc/cpuinfo is absent (not Linux)."""
    return frozenset((_cpuinfo_line("flags", cpuinfo) or "").split())
