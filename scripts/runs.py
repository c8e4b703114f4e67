"""What the scripts share: the real CIFAR-10 from ../shared unpacked, and `cnnbench` run as a user types it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

from cnnbench.rundir import job_overrides

ROOT = Path(__file__).resolve().parents[1]
CIFAR_TAR = ROOT.parent / "shared" / "datasets" / "cifar10-jpg.tar.gz"
HYMENOPTERA_TAR = ROOT.parent / "shared" / "datasets" / "hymenoptera.tar"
OVERWRITE = "trainer.overwrite=true"  # how a run replaces another in its folder


def extract_cifar10(tar_path: Path, into: Path) -> Path:
    """Unpack the CIFAR-10 ImageFolder archive into ``into`` (once) and return its ``cifar10`` folder."""
    if not (into / "cifar10").is_dir():
        with tarfile.open(tar_path) as tar:
            tar.extractall(into, filter="data")
    return into / "cifar10"


def extract_hymenoptera(tar_path: Path, into: Path) -> Path:
    """Unpack the hymenoptera photos (ants and bees, train/ and val/) into ``into`` (once); return their folder."""
    if not (into / "hymenoptera_data").is_dir():
        with tarfile.open(tar_path) as tar:
            tar.extractall(into, filter="data")
    return into / "hymenoptera_data"


def write_between_markers(page: Path, name: str, text: str) -> None:
    """Put ``text`` between the ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` markers of ``page``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    content = page.read_text()
    if start not in content or end not in content:
        sys.exit(f"{page} has no {start} ... {end} markers")
    page.write_text(re.sub(f"{re.escape(start)}.*?{re.escape(end)}", lambda _: f"{start}\n{text}\n{end}", content,
                           flags=re.S))


def experiments() -> list[str]:
    """The experiments cnnbench ships (``conf/experiment/*.yaml``)."""
    return sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))


def overrides_only(prog: str, extra: list[str]) -> list[str]:
    """What ``parse_known_args`` left over, as cnnbench overrides: an unknown option (``--epocs 1``) or a word that is
    no override is refused in one line before any run starts, not by Hydra after an hour of other runs."""
    wrong = [a for a in extra if a.startswith("-") or ("=" not in a and not a.startswith("~"))]
    if wrong:
        sys.exit(f"{prog}: unrecognized arguments: {' '.join(wrong)} (its options: --help; anything else is a "
                 "cnnbench override, key=value)")
    return extra


def run_cnnbench(run_dir: Path, *overrides: str, quiet: bool = False, cwd: Path | None = None,
                 reuse: bool = False) -> dict:
    """``python -m cnnbench OVERRIDES hydra.run.dir=RUN_DIR`` (output captured when ``quiet``); its results. With
    ``reuse``, a run completed in ``run_dir`` with the same overrides is returned as it is (a stopped comparison goes
    on where it stopped), and any other run there is replaced."""
    done = run_dir / "results.json"
    if reuse and done.is_file():
        results = json.loads(done.read_text())
        given = [o for o in results.get("overrides", []) if o != OVERWRITE]
        if results.get("status") == "completed" and job_overrides(given) == job_overrides(list(overrides)):
            print(f"reusing {run_dir}", flush=True)
            return results
        overrides = (*overrides, OVERWRITE)
    proc = subprocess.run([sys.executable, "-m", "cnnbench", *overrides, f"hydra.run.dir={run_dir}"],
                          capture_output=quiet, text=True, cwd=cwd)
    if proc.returncode:
        sys.exit(f"cnnbench {' '.join(overrides)} failed (exit {proc.returncode})\n{(proc.stderr or '')[-4000:]}")
    return json.loads(done.read_text())
