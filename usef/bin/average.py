"""``usef average`` / ``python -m usef.bin.average``: average checkpoints of a run.

Exit codes: 0 written, 2 usage error (no such run, no scored checkpoints, mismatched
checkpoints).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

EPILOG = """\
examples:
  python -m usef.bin.average exp/usef_conformer --best 5            # -> exp/usef_conformer/average_best5
  python -m usef.bin.average exp/usef_conformer --last 3 --out models/mine
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="usef average", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Average the weights of the best (by dev SI-SDRi) or last checkpoints of a "
        "training run into one model folder (model.safetensors + config.yaml).",
    )
    parser.add_argument("exp_dir", type=Path, help="experiment directory (holds checkpoints/)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--best", type=int, default=0, metavar="N", help="the N best checkpoints by dev SI-SDRi")
    which.add_argument("--last", type=int, default=0, metavar="N", help="the N newest checkpoints")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: EXP/average_best<N> or EXP/average_last<N>)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    if args.best < 0 or args.last < 0:
        print("usef average: error: N must be positive", file=sys.stderr)
        return 2
    from usef.train.average import average_best, select_checkpoints

    try:
        chosen = select_checkpoints(args.exp_dir, best=args.best, last=args.last)
        out = average_best(args.exp_dir, best=args.best, last=args.last, out_dir=args.out)
    except (FileNotFoundError, ValueError) as error:
        print(f"usef average: error: {error}", file=sys.stderr)
        return 2
    print(f"averaged {len(chosen)} checkpoints ({', '.join(c.name for c in chosen)}) into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
