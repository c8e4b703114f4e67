"""Screenshots of TensorBoard's Time Series, Scalars, Images and HParams dashboards for two example runs.

    python -m scripts.docs.tensorboard_screenshots [--logdir DIR] [--out docs/tensorboard] [--chromium PATH]
        [--dashboards timeseries,scalars,images,hparams] [--tag-filter REGEX] [--prefix NAME_]

Without ``--logdir`` it first trains the README's two example runs (``model=small_resnet trainer.epochs=3`` and
``model=vgg11_bn trainer.epochs=2`` on the bundled digits) into a temporary ``outputs/``. Then it starts
TensorBoard on 127.0.0.1, opens each dashboard in headless Chromium driven by Playwright, saves a PNG per
dashboard and stops TensorBoard. ``projector`` is a dashboard too (the runs' test embeddings, PCA by default);
``--tag-filter`` shows only the matching image tags (``explain|receptive``). Needs ``pip install playwright``
(the ``screenshots`` extra) and a system Chromium (Debian: ``apt-get install chromium``); Playwright's own browser
download is not used.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from scripts.runs import ROOT

RUNS = [("model=small_resnet", "trainer.epochs=3"), ("model=vgg11_bn", "trainer.epochs=2")]
DASHBOARDS = {"timeseries": 6, "scalars": 5, "images": 6, "hparams": 5, "projector": 20}  # seconds to render
DEFAULT = "timeseries,scalars,images,hparams"


def train_examples(into: Path) -> Path:
    """The example runs, as a user types them, in ``into/outputs/<date>/<time>``."""
    for overrides in RUNS:
        subprocess.run([sys.executable, "-m", "cnnbench", *overrides, "logger.print_config=false",
                        "logger.progress=false"], check=True, cwd=into)
        time.sleep(1.1)  # (run directories are named by the second)
    return into / "outputs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_tensorboard(logdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host",
                             "127.0.0.1", "--port", str(port), "--reload_interval", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):  # up to 2 minutes on a busy machine
        if proc.poll() is not None:
            raise SystemExit(f"tensorboard exited with code {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise SystemExit("tensorboard did not answer within 2 minutes")


def widen_run_list(page, width: str = "38%") -> None:
    """Widen the run list, as a reader does by dragging its edge to see whole run names (TensorBoard opens it at
    20% of the window)."""
    page.evaluate(f"""() => {{ for (const nav of document.querySelectorAll('nav.sidebar')) {{
        nav.style.width = '{width}'; }} window.dispatchEvent(new Event('resize')); }}""")
    time.sleep(1)


def screenshots(url: str, out: Path, chromium: str, dashboards: list[str], tag_filter: str = "",
                prefix: str = "") -> list[Path]:
    from urllib.parse import quote

    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    written = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        for name in dashboards:
            settle = DASHBOARDS[name]
            page.goto(f"{url}/#{name}" + (f"&tagFilter={quote(tag_filter)}" if tag_filter else ""))
            page.wait_for_load_state("networkidle")
            time.sleep(settle)  # charts and images draw after the data arrives
            close = page.locator("button[aria-label='Close side pane']")
            if close.count() and close.first.is_visible():  # (Time Series opens with its settings pane)
                close.first.click()
                time.sleep(1)
            widen_run_list(page)
            path = out / f"{prefix}{name}.png"
            page.screenshot(path=str(path))
            written.append(path)
        browser.close()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", type=Path, help="runs to show (default: train the two example runs)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "tensorboard")
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    parser.add_argument("--dashboards", default=DEFAULT, help=f"comma-separated, of {', '.join(DASHBOARDS)}")
    parser.add_argument("--tag-filter", default="", help="image tags to show (a regular expression)")
    parser.add_argument("--prefix", default="", help="prefix of the PNG names")
    args = parser.parse_args()
    unknown = set(args.dashboards.split(",")) - set(DASHBOARDS)
    if unknown:
        raise SystemExit(f"--dashboards: unknown {', '.join(sorted(unknown))}; choose from {', '.join(DASHBOARDS)}")
    if not args.chromium:
        raise SystemExit("no Chromium found: apt-get install chromium, or give --chromium PATH")
    logdir = args.logdir or train_examples(Path(tempfile.mkdtemp(prefix="cnnbench-tb-")))
    proc, url = start_tensorboard(logdir)
    try:
        for path in screenshots(url, args.out, args.chromium, args.dashboards.split(","), args.tag_filter,
                                args.prefix):
            print(f"wrote {path}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
