"""``usef compare``: paired comparison of two ``usef eval`` output folders.

Exit codes: 0 compared, 2 usage error (missing folder or file, unknown metric,
mismatched item sets without --intersect).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from usef.bin import HelpFormatter, UsageError, run_command

EPILOG = """\
example:
  usef eval --list eval.csv --out-dir exp/eval_usef --model usef-conformer-8k
  usef eval --list eval.csv --out-dir exp/eval_film --model embedding-conformer-8k
  usef compare exp/eval_usef exp/eval_film --bootstrap 10000 --seed 0
  # -> prints the table and writes exp/eval_usef/compare_<B name>.json

Delta = A - B per item, over the items scored in both folders. The CI is a
percentile bootstrap of the mean delta; p is the two-sided Wilcoxon signed-rank
test; "A wins" counts ties as half. Failure = SI-SDRi < 0 dB.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="usef compare",
        description="Compare two 'usef eval' output folders item by item: mean difference "
        "with a bootstrap 95% CI, Wilcoxon p-value, win rate, failure and confusion rates.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("eval_a", type=Path, metavar="EVAL_A", help="output folder of system A")
    parser.add_argument("eval_b", type=Path, metavar="EVAL_B", help="output folder of system B")
    parser.add_argument(
        "--out", type=Path, default=None,
        help="JSON result path (default: EVAL_A/compare_<B name>.json)",
    )
    parser.add_argument("--metric", default="si_sdr_imp", help="metrics.csv column to compare")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument(
        "--bootstrap", type=int, default=10000, metavar="N", help="bootstrap resamples"
    )
    parser.add_argument(
        "--intersect", action="store_true",
        help="compare the items scored in both folders instead of refusing mismatched item sets",
    )
    return parser


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "b"


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv, _compare, errors=(FileNotFoundError, ValueError),
                       log_level=logging.WARNING)


def _compare(args: argparse.Namespace) -> int:
    if args.bootstrap < 1:
        raise UsageError("--bootstrap must be at least 1")
    if args.seed < 0:  # numpy's generators take non-negative seeds only
        raise UsageError(f"--seed must be >= 0, got {args.seed}")

    from usef.report.compare import format_table, load_eval, paired_compare

    a = load_eval(args.eval_a)
    b = load_eval(args.eval_b)
    result = paired_compare(
        a, b, metric=args.metric, seed=args.seed,
        n_bootstrap=args.bootstrap, intersect=args.intersect,
    )
    out = args.out or args.eval_a / f"compare_{_file_safe(result['b']['name'])}.json"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {out}: {exc}") from exc
    print(format_table(result), end="")
    if result["n_dropped"]:
        reasons = ", ".join(f"{k} {v}" for k, v in result["dropped"].items() if v)
        print(f"dropped {result['n_dropped']} items ({reasons})")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
