"""``usef average``: average checkpoints of a run.

Exit codes: 0 written, 2 usage error (no such run, no scored checkpoints, mismatched
checkpoints).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from usef.bin import HelpFormatter, UsageError, run_command

EPILOG = """\
examples:
  usef average exp/usef_conformer --best 5            # -> exp/usef_conformer/average_best5
  usef average exp/usef_conformer --last 3 --out models/mine
  usef average exp/usef_ema --last 1 --raw           # the raw weights of a run with train.ema_decay
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="usef average", epilog=EPILOG, formatter_class=HelpFormatter,
        description="Average the weights of the best (by dev SI-SDRi) or last checkpoints of a "
        "training run into one model folder (model.safetensors + config.yaml).",
    )
    parser.add_argument("exp_dir", type=Path, help="experiment directory (holds checkpoints/)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--best", type=int, default=None, metavar="N", help="the N best checkpoints by dev SI-SDRi")
    which.add_argument("--last", type=int, default=None, metavar="N", help="the N newest checkpoints")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: EXP/average_best<N> or EXP/average_last<N>)")
    parser.add_argument("--raw", action="store_true",
                        help="for a run that kept a weight average (train.ema_decay): average the raw "
                        "weights saved in train_state.pt instead of the average in model.safetensors")
    return parser


def _average(args: argparse.Namespace) -> int:
    option, count = ("--best", args.best) if args.best is not None else ("--last", args.last)
    if count < 1:
        raise UsageError(f"{option} N must be at least 1, got {count}")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} exists and is not a folder")
    # lazy: imports torch
    from usef.train.average import average_best, select_checkpoints

    best, last = args.best or 0, args.last or 0
    chosen = select_checkpoints(args.exp_dir, best=best, last=last)
    out = average_best(args.exp_dir, best=best, last=last, out_dir=args.out, raw=args.raw)
    print(f"averaged {len(chosen)} checkpoints ({', '.join(c.name for c in chosen)}){' (raw weights)' if args.raw else ''} "
          f"into {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``usef average``; returns the exit code."""
    return run_command(build_parser(), argv, _average, errors=(FileNotFoundError, ValueError),
                       log_level=logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
