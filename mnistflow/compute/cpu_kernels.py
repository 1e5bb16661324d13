"""Which CPU kernels compute the numbers: oneDNN's ISA ladder, the cap a stage applies to its
own process before TensorFlow loads, and the float kernels onnxruntime picks by itself.

Kernels of different ISAs round differently (benchmarks/results/cpu_kernels.md), so the cap is
a declared param (compute.cpu_isa) and the effective choice is part of reports/compute.json
(mnistflow/compute/fingerprint.py).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from mnistflow.compute.cpu_features import detect_cpu_flags
from mnistflow.params import Params

# oneDNN's CPU ISA ladder (ONEDNN_MAX_CPU_ISA values, lower case), lowest first, each with the
# /proc/cpuinfo flags it needs on top of the rungs below it.
ONEDNN_ISA_LADDER: tuple[tuple[str, frozenset[str]], ...] = (
    ("sse41", frozenset({"sse4_1"})),
    ("avx", frozenset({"avx"})),
    ("avx2", frozenset({"avx2", "fma"})),
    ("avx2_vnni", frozenset({"avx_vnni"})),
    ("avx512_core", frozenset({"avx512f", "avx512bw", "avx512vl", "avx512dq"})),
    ("avx512_core_vnni", frozenset({"avx512_vnni"})),
    ("avx512_core_bf16", frozenset({"avx512_bf16"})),
    ("avx512_core_fp16", frozenset({"avx512_fp16"})),
    ("avx512_core_amx", frozenset({"amx_tile", "amx_int8", "amx_bf16"})),
    ("avx512_core_amx_fp16", frozenset({"amx_fp16"})),
)
ONEDNN_ISAS = tuple(name for name, _ in ONEDNN_ISA_LADDER)
# The rungs avx2_vnni sits beside rather than under: a CPU with AVX-512 but not AVX-VNNI
# (AMD Zen 4, Intel Ice Lake) still runs avx512_core.
_SIDE_RUNGS = frozenset({"avx2_vnni"})
# onnxruntime's MLAS picks its float32 GEMM kernels by these flags, highest first; it has no
# cap, so the fingerprint records which one this host gets.
ONNXRUNTIME_FLOAT_KERNELS = (
    ("avx512f", frozenset({"avx512f"})),
    ("fma3", frozenset({"avx2", "fma"})),
    ("avx", frozenset({"avx"})),
    ("sse2", frozenset()),
)


def host_onednn_isa(cpu_flags: frozenset[str]) -> str:
    """The highest rung of oneDNN's ladder this CPU supports ("none" on non-x86 CPUs)."""
    best = "none"
    for name, needed in ONEDNN_ISA_LADDER:
        if not needed <= cpu_flags:
            if name in _SIDE_RUNGS:
                continue
            break
        best = name
    return best


def _rank(isa: str) -> int:
    return ONEDNN_ISAS.index(isa) if isa in ONEDNN_ISAS else -1


def effective_onednn_isa(
    requested: str, cpu_flags: frozenset[str], environment: Mapping[str, str]
) -> str:
    """The oneDNN ISA TensorFlow will dispatch to: the lowest of the declared cap (`native`:
    none), an ONEDNN_MAX_CPU_ISA the environment already sets, and what the CPU has."""
    candidates = [host_onednn_isa(cpu_flags)]
    if requested != "native":
        candidates.append(requested)
    inherited = environment.get("ONEDNN_MAX_CPU_ISA", "").strip().lower()
    if inherited and inherited != "all":
        candidates.append(inherited if inherited in ONEDNN_ISAS else "unknown:" + inherited)
    unknown = [isa for isa in candidates if isa not in ONEDNN_ISAS]
    if unknown:
        return unknown[0]
    return min(candidates, key=_rank)


def onednn_enabled(environment: Mapping[str, str]) -> bool:
    """TensorFlow's x86 wheels use oneDNN unless TF_ENABLE_ONEDNN_OPTS turns it off."""
    return environment.get("TF_ENABLE_ONEDNN_OPTS", "1").strip().lower() not in ("0", "false")


def onnxruntime_float_kernels(cpu_flags: frozenset[str]) -> str:
    for name, needed in ONNXRUNTIME_FLOAT_KERNELS:
        if needed <= cpu_flags:
            return name
    return "sse2"


# Environment variables that change oneDNN's float32 arithmetic behind the params' back (an
# "fpmath mode" lets float32 primitives compute in bf16 or tf32): a stage removes them.
ARITHMETIC_OVERRIDES = ("ONEDNN_DEFAULT_FPMATH_MODE", "TF_SET_ONEDNN_FPMATH_MODE")


def apply_cpu_kernels(params: Params, environment: dict[str, str] | None = None) -> str:
    """Set this process's CPU arithmetic as params.compute declares it: oneDNN's ISA cap and
    TensorFlow's intra-op thread count, with no fpmath override. Returns the effective ISA.

    Must run before TensorFlow is imported: both are read once, at start-up."""
    env = os.environ if environment is None else environment
    if "tensorflow" in sys.modules and environment is None:
        raise RuntimeError("apply_cpu_kernels must run before TensorFlow is imported")
    isa = effective_onednn_isa(params.compute.cpu_isa, detect_cpu_flags(), env)
    if isa in ONEDNN_ISAS:
        env["ONEDNN_MAX_CPU_ISA"] = isa.upper()
    env["TF_NUM_INTRAOP_THREADS"] = str(params.compute.threads)
    for variable in ARITHMETIC_OVERRIDES:
        env.pop(variable, None)
    return isa
