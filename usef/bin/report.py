"""``usef report``: a static HTML listening report over one or more eval folders.

Exit codes: 0 written, 2 usage error (missing folder or list, mismatched item ids,
matplotlib not installed, output not writable).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from usef.bin import HelpFormatter, ItemProgress, UsageError, run_command

EPILOG = """\
example:
  usef eval --list eval.csv --out-dir exp/eval_usef --model usef-conformer-8k
  usef eval --list eval.csv --out-dir exp/eval_film --model embedding-conformer-8k
  usef report exp/eval_usef exp/eval_film --out exp/report --worst 50
  # -> open exp/report/index.html in a browser (no server needed)
  # with a sortable similarity column from 'usef study similarity --list eval.csv --out-dir exp/sim ...':
  usef report exp/eval_usef exp/eval_film --out exp/report --similarity exp/sim/similarity.csv

The folders must hold the same item ids. Mixture, reference and target audio come
from the item list recorded by 'usef eval --list' (or --list here); estimates from
each folder's estimates/. Audio and spectrograms are copied under --out, so the
folder can be moved or shared as a whole. Needs matplotlib: pip install 'usef[report]'.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="usef report",
        description="Write a static HTML page to listen to and compare eval folders item by "
        "item: summary with SI-SDRi histogram, audio players, spectrograms, sortable metrics.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("eval_dirs", type=Path, nargs="+", metavar="EVAL_DIR",
                        help="output folders of 'usef eval' (the first one ranks --worst)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="report folder (index.html, audio/, spec/)")
    parser.add_argument("--worst", type=int, default=None, metavar="N",
                        help="show only the N items with the lowest SI-SDRi of the first system")
    parser.add_argument("--title", default=None, help="page title")
    parser.add_argument("--list", type=Path, default=None, metavar="CSV", dest="eval_list",
                        help="evaluation list (default: the one recorded in summary.json)")
    parser.add_argument("--similarity", type=Path, default=None, metavar="CSV",
                        help="add a sortable similarity column: similarity.csv of 'usef study "
                        "similarity' (or any CSV with id and similarity columns)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv, _report, log_level=logging.WARNING,
                       errors=(FileNotFoundError, ValueError, ImportError, OSError))


def _report(args: argparse.Namespace) -> int:
    if args.worst is not None and args.worst < 1:
        raise UsageError("--worst must be at least 1")

    from usef.report.html import build_report

    extra = None
    if args.similarity is not None:
        from usef.report.similarity import read_similarity

        values, title = read_similarity(args.similarity)
        extra = {title: values}
    bar = ItemProgress()
    try:
        result = build_report(args.eval_dirs, args.out, worst=args.worst, title=args.title,
                              eval_list=args.eval_list, progress=bar, extra_columns=extra)
    finally:
        bar.close()
    for note in result["notes"]:
        print(f"note: {note}")
    print(f"wrote {result['index']} ({result['n_shown']} of {result['n_items']} items, "
          f"{len(result['systems'])} systems)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
