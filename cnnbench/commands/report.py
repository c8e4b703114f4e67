"""``cnnbench-report DIR [DIR ...]``: the leaderboard of the runs and sweeps under the given directories."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cnnbench.cli import error_boundary, fail, writable_folder
from cnnbench.report_files import write_report


def main(argv: list[str] | None = None) -> None:
    """Console entry point of ``cnnbench-report``."""
    parser = argparse.ArgumentParser(prog="cnnbench-report", description="Leaderboard of cnnbench runs and sweeps.")
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep or run directories (merged)")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: the first directory)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace leaderboard files there that cnnbench-report did not write (or that changed)")
    args = parser.parse_args(argv)
    with error_boundary():  # (a path too long to use is one line too)
        report(args)


def report(args: argparse.Namespace) -> None:
    missing = [str(d) for d in args.dirs if not d.exists()]
    if missing:
        fail(f"{', '.join(missing)} does not exist")
    out = args.out or (args.dirs[0] if args.dirs[0].is_dir() else args.dirs[0].parent)
    if out.exists() and not out.is_dir():
        fail(f"--out {out} is a file; give a folder for the leaderboard files")
    writable_folder(out, f"--out {out}")
    skipped: list[str] = []
    board = write_report(args.dirs, out, skipped=skipped, overwrite=args.overwrite)
    for line in skipped:
        print(f"skipped {line}", file=sys.stderr)
    if board.total == 0:
        fail(f"no readable results.json under {', '.join(map(str, args.dirs))}; nothing written")
    if skipped:
        fail(f"{len(skipped)} results.json file(s) could not be read (listed above); the leaderboard in {out} has "
             f"the other {board.total}", code=1)


if __name__ == "__main__":
    main()
