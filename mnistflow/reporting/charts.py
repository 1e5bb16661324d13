"""DVC's own plot definitions (Vega-Lite specs filled by `dvc plots diff --json`) as SVG.

vl-convert renders Vega-Lite in-process (Vega's own JavaScript in an embedded Deno runtime,
shipped in the wheel): no browser, no network, the same drawing `dvc plots show` makes.
"""

from __future__ import annotations

from typing import Any

# DVC's templates declare Vega-Lite v5 ($schema …/vega-lite/v5.json); render with a v5.
VEGA_LITE_VERSION = "5.21"


def vega_lite_svg(spec: dict[str, Any]) -> str:
    import vl_convert

    return vl_convert.vegalite_to_svg(spec, vl_version=VEGA_LITE_VERSION)
