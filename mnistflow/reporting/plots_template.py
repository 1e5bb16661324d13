"""The page template `dvc plots show` fills, with Vega, Vega-Lite and Vega-Embed inside it.

DVC's default page loads those three libraries from a CDN, so offline its curves and the
confusion matrix are blank. A template without DVC's `{scripts}` placeholder gets no CDN
tags; this one carries vl-convert's bundle of the libraries inline instead. It is committed
(.dvc/plots-offline.html, the project's `plots.html_template` in .dvc/config), so every
clone draws offline; `python -m mnistflow.reporting.plots_template` regenerates it, and a
test checks it equals what the installed vl-convert makes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mnistflow.core.atomic import atomic_file
from mnistflow.paths import PLOTS_TEMPLATE
from mnistflow.reporting.charts import VEGA_LITE_VERSION

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- Vega, Vega-Lite and Vega-Embed, bundled by vl-convert: no network needed. -->
    <script type="text/javascript">
BUNDLE
    </script>
    <script type="text/javascript">
        // DVC calls vegaEmbed(el, spec) with no options: drop the "Open in Vega Editor"
        // action, which would post the plot's data to vega.github.io.
        const embedWithActions = window.vegaEmbed;
        window.vegaEmbed = (el, spec, options) => embedWithActions(el, spec,
            Object.assign({actions: {export: true, source: true, compiled: true, editor: false}},
                          options || {}));
    </script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def offline_template() -> str:
    import vl_convert

    bundle = vl_convert.javascript_bundle(vl_version=VEGA_LITE_VERSION)
    # DVC fills {scripts}, {plot_divs} and {refresh_tag} by plain replacement: the bundle
    # must hold none of them.
    if any(f"{{{name}}}" in bundle for name in ("plot_divs", "refresh_tag", "scripts")):
        raise RuntimeError("vl-convert's bundle contains a DVC template placeholder")
    return PAGE.replace("BUNDLE", bundle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=Path(PLOTS_TEMPLATE))
    arguments = parser.parse_args()
    with atomic_file(arguments.output) as temporary:
        temporary.write_text(offline_template(), encoding="utf-8")


if __name__ == "__main__":
    main()
