"""``cnnbench-report DIR [DIR ...]``: the leaderboard of the runs and sweeps under the given directories."""

from __future__ import annotations

import argparse
from pathlib import Path

from cnnbench.cli import error_boundary, fail
from cnnbench.leaderboard import write_report


def main(argv: list[str] | None = None) -> None:
    """Console entry point of ``cnnbench-report``."""
    parser = argparse.ArgumentParser(prog="cnnbench-report", description="Leaderboard of cnnbench runs and sweeps.")
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep or run directories (merged)")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: the first directory)")
    args = parser.parse_args(argv)
    missing = [str(d) for d in args.dirs if not d.exists()]
    if missing:
        fail(f"{', '.join(missing)} does not exist")
    with error_boundary():
        board = write_report(args.dirs, args.out)
    if board.total == 0:
        fail(f"no results.json under {', '.join(map(str, args.dirs))}")


if __name__ == "__main__":
    main()
