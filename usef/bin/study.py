"""``usef study``: sweep one inference setting over an evaluation list.

``usef study reference-length``: SI-SDRi of each model against the length of the
reference (enrolment) recording.

Exit codes: 0 every item scored, 1 some items failed (see the error column of
reference_length.csv), 2 usage error (bad list, unknown model, bad lengths,
matplotlib missing).
"""

from __future__ import annotations

import argparse
import logging
import math
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from usef.bin import (
    HelpFormatter,
    ItemProgress,
    UsageError,
    add_threads_option,
    apply_threads,
    load_model_or_usage_error,
    run_command,
)

logger = logging.getLogger("usef.study")

REFERENCE_LENGTH_EPILOG = """\
example:
  # the bundled models on the held-out dev set (python tools/make_dev_set.py --out dev8k);
  # any CSV with columns mixture,reference,target[,id,interferer] works
  usef study reference-length --model usef-conformer-8k-equal --model embedding-conformer-8k \\
      --list dev8k/eval.csv --lengths 0.5 1 2 4 --out-dir exp/study_reflen \\
      --crop random --seed 0 --device cpu

Each reference is cut to every length (from its start, its centre or a seeded random
offset, the same crop for every model); a reference shorter than a length is used
whole and counted in the n_shorter column and under the plot's tick.
outputs in --out-dir: reference_length.csv (model x length x item), summary.csv
(mean SI-SDRi, 95% CI, failure rate = share with SI-SDRi < 0), reference_length.png,
study.json
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="usef study",
        description="Sweep one inference setting over an evaluation list and plot the result.",
        formatter_class=HelpFormatter,
    )
    studies = parser.add_subparsers(dest="study", metavar="<study>", required=True)
    ref = studies.add_parser(
        "reference-length",
        help="SI-SDRi against reference length, per model",
        description="Crop every reference to each length, extract with every model and "
        "plot mean SI-SDRi with a 95% CI against the reference length.",
        epilog=REFERENCE_LENGTH_EPILOG,
        formatter_class=HelpFormatter,
    )
    add = ref.add_argument
    add("--model", action="append", required=True, metavar="MODEL",
        help="pretrained name or model directory; repeat for several models")
    add("--list", type=Path, required=True, metavar="CSV", help="evaluation list")
    add("--lengths", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0, 8.0], metavar="SECONDS",
        help="reference lengths in seconds")
    add("--out-dir", type=Path, required=True, help="where results are written")
    add("--seed", type=int, default=0, help="seed of the random crops")
    add("--crop", choices=("start", "random", "center"), default="start",
        help="where the crop starts in the reference")
    add("--device", default="cpu", help="torch device")
    add("--limit", type=int, default=None, help="use only the first N items of the list")
    add_threads_option(ref)
    return parser


def _load_models(specs: Sequence[str], device: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Load each model once; returns name -> Extractor and name -> the --model given."""
    extractors: dict[str, Any] = {}
    requested: dict[str, str] = {}
    for spec in specs:
        if spec in requested.values():
            raise UsageError(f"--model {spec!r} is given twice")
        extractor = load_model_or_usage_error(spec, device)
        name = str(extractor.name)
        if name in extractors:  # e.g. exp/usef/best and exp/film/best
            name = f"{name} ({spec})"
        extractors[name] = extractor
        requested[name] = spec
    return extractors, requested


def _format(value: Any, spec: str = ".2f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return format(value, spec)


def _print_table(summary: Sequence[dict[str, Any]], out_dir: Path) -> None:
    width = max([5, *(len(row["model"]) for row in summary)])
    print(f"{'model':<{width}} {'len s':>6} {'n':>5} {'SI-SDRi':>8} {'95% CI':>16} {'fail':>6} {'short':>6}")
    for row in summary:
        ci = f"[{_format(row['ci95_low'])}, {_format(row['ci95_high'])}]"
        print(f"{row['model']:<{width}} {row['length_s']:>6g} {row['n']:>5} {_format(row['mean']):>8} "
              f"{ci:>16} {_format(row['failure_rate']):>6} {row['n_shorter']:>6}")
    errors = sum(row["n_errors"] for row in summary)
    print(f"errors: {errors}; results in {out_dir}")


def _reference_length(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from usef.evaluate import read_eval_list
    from usef.report.studies import reference_length_study

    if args.limit is not None and args.limit <= 0:
        raise UsageError("--limit must be positive")
    bad = [v for v in args.lengths if not (math.isfinite(v) and v > 0)]
    if bad:
        raise UsageError(f"--lengths must be positive seconds, got {bad}")
    if len(set(args.lengths)) != len(args.lengths):
        raise UsageError(f"--lengths has duplicates: {args.lengths}")
    if args.seed < 0:  # numpy's generators take non-negative seeds only
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    apply_threads(args.threads)
    items = read_eval_list(args.list)
    if not items:
        raise UsageError(f"{args.list}: the evaluation list is empty")
    items = items[: args.limit]
    extractors, requested = _load_models(args.model, args.device)

    settings = {
        "command": "usef study " + shlex.join(argv),
        "list": str(args.list),
        "device": args.device,
        "limit": args.limit,
        "requested_models": requested,
    }
    bar = ItemProgress(len(items) * len(extractors) * len(args.lengths), unit="run")
    try:
        summary = reference_length_study(
            extractors, items, args.lengths, args.out_dir, seed=args.seed, crop=args.crop,
            progress=bar, settings=settings,
        )
    finally:
        bar.close()
    _print_table(summary, args.out_dir)
    return 1 if any(row["n_errors"] for row in summary) else 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    studies = {"reference-length": _reference_length}
    return run_command(build_parser(), argv, lambda args: studies[args.study](args, argv),
                       errors=(ValueError, FileNotFoundError, ImportError))


if __name__ == "__main__":
    sys.exit(main())
