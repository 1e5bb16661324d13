"""Screenshots, in a real headless browser, of what a person opens after `make run`.

    python scripts/screenshots.py [--output reports/screenshots]

1. reports/report.html and 2. the page `dvc plots show` writes, both with the network cut
   (every host resolves to nothing, every request goes to a dead proxy): what renders, renders
   offline.
3. The Prefect UI of `mnistflow serve` on the newest flow run of the project's Prefect home:
   the run `make run` made, its task states and artifacts.

Needs Chromium (Debian: `apt install chromium`). Writes one PNG per page and prints its path.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OFFLINE = ["--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9"]
UI_PORT = 4311


def browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("no Chromium found: apt install chromium")


def screenshot(url: str, target: Path, height: int, extra: list[str] = ()) -> Path:
    """A full-width capture of `url` after its scripts had 20 s of virtual time."""
    with tempfile.TemporaryDirectory(prefix="mnistflow-chromium-") as profile:
        subprocess.run(
            [
                browser(), "--headless=new", "--no-sandbox", "--disable-gpu",
                "--hide-scrollbars", "--no-first-run", f"--user-data-dir={profile}",
                f"--window-size=1280,{height}", "--virtual-time-budget=20000",
                f"--screenshot={target}", *extra, url,
            ],
            check=True, capture_output=True, timeout=180,
        )  # fmt: skip
    print(target)
    return target


def report_page(output: Path) -> Path:
    report = ROOT / "reports" / "report.html"
    if not report.is_file():
        raise SystemExit(f"{report} is missing: run `make run` or `mnistflow report` first")
    return screenshot(report.as_uri(), output / "report.png", 6000, OFFLINE)


def dvc_plots_page(output: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="mnistflow-plots-") as folder:
        subprocess.run(
            [sys.executable, "-m", "dvc", "plots", "show", "-o", folder],
            cwd=ROOT, check=True, capture_output=True,
        )  # fmt: skip
        return screenshot(
            (Path(folder) / "index.html").as_uri(), output / "dvc-plots.png", 2400, OFFLINE
        )


def api(url: str, body: dict | None = None):
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
        method="POST" if body is not None else "GET",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read() or b"null")


def prefect_ui_page(output: Path) -> Path:
    """`mnistflow serve` on a spare port; the newest flow run's page in its UI."""
    base = f"http://127.0.0.1:{UI_PORT}"
    try:
        api(f"{base}/api/health")
        raise SystemExit(f"port {UI_PORT} is taken by another server; stop it first")
    except OSError:
        pass
    serve = subprocess.Popen(
        [sys.executable, "-m", "mnistflow", "serve", "--port", str(UI_PORT)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        for _ in range(120):
            try:
                if api(f"{base}/api/health"):
                    break
            except OSError:
                pass
            time.sleep(1)
        runs = api(f"{base}/api/flow_runs/filter", {"sort": "START_TIME_DESC", "limit": 1})
        if not runs:
            raise SystemExit("no flow run in the project's Prefect home: run `make run` first")
        page = f"{base}/runs/flow-run/{runs[0]['id']}"
        return screenshot(page, output / "prefect-flow-run.png", 1400)
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=ROOT / "reports" / "screenshots")
    arguments = parser.parse_args()
    arguments.output.mkdir(parents=True, exist_ok=True)
    report_page(arguments.output)
    dvc_plots_page(arguments.output)
    prefect_ui_page(arguments.output)


if __name__ == "__main__":
    main()
