"""Report on a multirun sweep (also run automatically when a multirun ends).

    python scripts/summarize.py SWEEP_DIR

Writes SWEEP_DIR/summary.csv (one row per job: run directory, status and error, overrides, final
step, wall time, final losses from its metrics.csv, eval metrics from its eval.json) and
SWEEP_DIR/index.html (turntable, latest validation stills, metrics and GLB link per job; relative
paths, opens from disk). Prints the two paths.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from framework.utils.sweep_summary import summarize  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        csv_path, html_path, rows = summarize(args.sweep_dir)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    for row in rows:
        print(f"{row['status']:>11}  {row['job']}  {row['error']}".rstrip())
    print(csv_path)
    print(html_path)


if __name__ == "__main__":
    main()
