"""The compute fingerprint and the kernel cap: what decides the bytes is resolved per host."""

from __future__ import annotations

import json
import subprocess
import sys

from mnistflow.compute.cpu_kernels import (
    apply_cpu_kernels,
    effective_onednn_isa,
    host_onednn_isa,
    onednn_enabled,
    onnxruntime_float_kernels,
)
from mnistflow.compute.fingerprint import platform_fingerprint
from mnistflow.params import parse_params
from tests.project_root import PROJECT_ROOT

AVX512 = {"sse4_1", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq"}
# The two hosts of this machine kind, as /proc/cpuinfo names their features.
ZEN4 = frozenset(AVX512 | {"avx512_vnni", "avx512_bf16"})
SAPPHIRE_RAPIDS = frozenset(
    AVX512 | {"avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16"}
)
HASWELL = frozenset({"sse4_1", "avx", "avx2", "fma"})


def test_the_isa_ladder_reads_cpu_flags():
    assert host_onednn_isa(ZEN4) == "avx512_core_bf16"
    assert host_onednn_isa(SAPPHIRE_RAPIDS) == "avx512_core_amx"
    assert host_onednn_isa(HASWELL) == "avx2"
    # AVX-VNNI sits beside AVX-512, not under it: a CPU without it still runs avx512_core.
    assert host_onednn_isa(frozenset(AVX512)) == "avx512_core"
    assert host_onednn_isa(frozenset()) == "none"


def test_both_hosts_of_the_kind_resolve_the_same_kernels_under_the_default_cap():
    default = parse_params({}).compute.cpu_isa
    assert effective_onednn_isa(default, ZEN4, {}) == "avx512_core"
    assert effective_onednn_isa(default, SAPPHIRE_RAPIDS, {}) == "avx512_core"
    # An AVX2-only host cannot honour the cap: it says so, and its fingerprint differs.
    assert effective_onednn_isa(default, HASWELL, {}) == "avx2"
    # native: each host its best, so the two hosts differ.
    assert effective_onednn_isa("native", ZEN4, {}) != effective_onednn_isa(
        "native", SAPPHIRE_RAPIDS, {}
    )


def test_an_inherited_cap_or_onednn_off_is_what_runs():
    assert effective_onednn_isa("avx512_core", SAPPHIRE_RAPIDS, {"ONEDNN_MAX_CPU_ISA": "AVX2"}) == (
        "avx2"
    )
    assert effective_onednn_isa("avx2", ZEN4, {"ONEDNN_MAX_CPU_ISA": "ALL"}) == "avx2"
    assert effective_onednn_isa("avx2", ZEN4, {"ONEDNN_MAX_CPU_ISA": "bogus"}) == "unknown:bogus"
    assert onednn_enabled({}) and not onednn_enabled({"TF_ENABLE_ONEDNN_OPTS": "0"})
    assert onnxruntime_float_kernels(ZEN4) == "avx512f"
    assert onnxruntime_float_kernels(HASWELL) == "fma3"


def test_apply_sets_the_declared_arithmetic_for_the_process():
    environment = {"ONEDNN_DEFAULT_FPMATH_MODE": "BF16", "TF_NUM_INTRAOP_THREADS": "16"}
    params = parse_params({"compute": {"cpu_isa": "avx2", "threads": 3}})
    isa = apply_cpu_kernels(params, environment)
    assert isa in ("avx2", "avx", "sse41", "none")
    if isa == "avx2":
        assert environment["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    # The thread count is the declared one, whatever the host or the caller's environment.
    assert environment["TF_NUM_INTRAOP_THREADS"] == "3"
    assert "ONEDNN_DEFAULT_FPMATH_MODE" not in environment


def test_fingerprints_differ_exactly_where_the_arithmetic_would():
    params = parse_params({})
    zen = platform_fingerprint(params, ZEN4, {})
    sapphire = platform_fingerprint(params, SAPPHIRE_RAPIDS, {})
    assert zen == sapphire
    assert zen["precision"] == "float32" and zen["device"] == "cpu"
    assert zen["tensorflow_cpu_kernels"] == "oneDNN avx512_core"
    assert zen["tensorflow_threads"] == 2
    assert platform_fingerprint(parse_params({"compute": {"threads": 4}}), ZEN4, {}) != zen
    assert set(zen["libraries"]) >= {"tensorflow", "keras", "onnxruntime", "tf2onnx"}
    assert platform_fingerprint(params, HASWELL, {}) != zen
    assert platform_fingerprint(params, ZEN4, {"TF_ENABLE_ONEDNN_OPTS": "0"}) != zen
    bf16 = platform_fingerprint(parse_params({"train": {"mixed_precision": "bf16"}}), ZEN4, {})
    assert bf16["precision"] == "mixed_bfloat16"


def test_the_compute_stage_writes_this_hosts_fingerprint(tmp_path):
    output = tmp_path / "compute.json"

    def stage(**environment: str) -> dict:
        import os

        env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
        result = subprocess.run(
            [sys.executable, "-m", "stages.compute", "--params", str(tmp_path / "params.yaml"),
             "--output", str(output)],
            cwd=PROJECT_ROOT, env={**env, **environment}, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        # TensorFlow is not imported for it: it runs on every repro.
        return json.loads(output.read_text())

    (tmp_path / "params.yaml").write_text("compute:\n  cpu_isa: avx512_core\n")
    here = stage()
    again = output.read_bytes()
    assert stage() == here and output.read_bytes() == again
    capped = stage(ONEDNN_MAX_CPU_ISA="AVX2")
    assert capped["tensorflow_cpu_kernels"] == "oneDNN avx2"
    assert capped != here or here["tensorflow_cpu_kernels"] == "oneDNN avx2"


def run_python(code: str) -> list:
    """`code` in a fresh interpreter (what it imports matters here); its last line, as JSON."""
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True,
        timeout=300, check=True,
    )  # fmt: skip
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_keras_loads_without_its_extras_and_they_still_import_afterwards():
    loaded = run_python(
        "import json, sys\n"
        "from mnistflow.compute.keras_loading import load_keras\n"
        "keras = load_keras()\n"
        "during = sorted(set(sys.modules) & {'sklearn', 'pandas'})\n"
        "import pandas, sklearn.base\n"
        "model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])\n"
        "print(json.dumps([during, keras.__name__, sys.modules['sklearn'] is not None,"
        " load_keras() is keras, int(model.count_params())]))"
    )
    assert loaded == [[], "keras", True, True, 3]


def test_keras_already_loaded_with_its_extras_is_left_as_it_is():
    loaded = run_python(
        "import json, sys, sklearn\n"
        "from mnistflow.compute.keras_loading import load_keras\n"
        "keras = load_keras()\n"
        "from keras.src.wrappers import fixes\n"
        "print(json.dumps([fixes.sklearn is sys.modules['sklearn']]))"
    )
    # scikit-learn was there first: Keras took it, as a plain `import keras` would.
    assert loaded == [True]


def test_a_failed_keras_import_leaves_no_mark_behind():
    """Keras failing to import (here: a finder that refuses it) leaves scikit-learn and pandas
    importable, and a None another hand put in sys.modules alone."""
    loaded = run_python(
        "import json, sys\n"
        "class Refuse:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'keras': raise ImportError('refused')\n"
        "sys.meta_path.insert(0, Refuse())\n"
        "sys.modules['left_alone'] = None\n"
        "from mnistflow.compute.keras_loading import load_keras\n"
        "try:\n"
        "    load_keras()\n"
        "except ImportError as error:\n"
        "    message = str(error)\n"
        "marks = [n for n in ('sklearn', 'pandas') if n in sys.modules]\n"
        "import pandas, sklearn\n"
        "print(json.dumps([message, marks, 'left_alone' in sys.modules]))"
    )
    assert loaded == ["refused", [], True]
