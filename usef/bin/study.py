"""``usef study``: sweep one inference setting over an evaluation list.

``usef study reference-length``: SI-SDRi of each model against the length of the
reference (enrolment) recording.

``usef study similarity``: SI-SDRi of each model, and their paired difference, in
bins of how alike target and interferer sound (median-F0 distance or d-vector cosine).

Exit codes: 0 every item scored, 1 some items failed (see the error column of
reference_length.csv / similarity.csv), 2 usage error (bad list, unknown model, bad
lengths or bins, an item without interferer, matplotlib missing for reference-length,
resemblyzer missing for --similarity dvector).
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

SIMILARITY_EPILOG = """\
example:
  # the bundled equal-budget pair on the held-out dev set (python tools/make_dev_set.py --out dev8k);
  # any CSV with columns mixture,reference,target,interferer[,id] works; --list repeats
  usef study similarity --model usef-conformer-8k-equal --model embedding-conformer-8k \\
      --list dev8k/eval.csv --out-dir exp/study_similarity --bins 4 --threads 1

Similarity of target and interferer: 'pitch' = median-F0 distance in semitones
(smaller = more alike, NumPy only); 'dvector' = cosine of resemblyzer d-vectors
(larger = more alike, pip install 'usef[resemblyzer]'); 'auto' = dvector when
resemblyzer is installed, else pitch. Items are cut into quantile bins of it; per
bin: each model's mean SI-SDRi (95% bootstrap CI, seeded), failure rate (SI-SDRi < 0),
confusion rate, and the paired difference first model - each other model.
With several lists, ids become <list folder>/<id>.
outputs in --out-dir: similarity.csv (per item), similarity_bins.csv (per bin and
series), similarity.json (settings, table, trend), similarity.png (needs matplotlib;
skipped without it)
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

    sim = studies.add_parser(
        "similarity",
        help="SI-SDRi and paired difference in bins of target-interferer similarity",
        description="Extract with every model, measure how alike target and interferer are "
        "and report SI-SDRi per model and the paired difference per similarity bin.",
        epilog=SIMILARITY_EPILOG,
        formatter_class=HelpFormatter,
    )
    add = sim.add_argument
    add("--model", action="append", required=True, metavar="MODEL",
        help="pretrained name or model directory; repeat (the first is A of the differences A - B)")
    add("--list", action="append", type=Path, required=True, metavar="CSV", dest="lists",
        help="evaluation list with an interferer column; repeat to pool lists")
    add("--out-dir", type=Path, required=True, help="where results are written")
    add("--similarity", choices=("auto", "pitch", "dvector"), default="auto",
        help="how alike target and interferer are (see below)")
    add("--bins", type=int, default=4, metavar="N", help="number of quantile bins")
    add("--seed", type=int, default=0, help="seed of the bootstrap")
    add("--bootstrap", type=int, default=2000, metavar="N", help="bootstrap resamples")
    add("--device", default="cpu", help="torch device")
    add("--limit", type=int, default=None, help="use only the first N items (after pooling the lists)")
    add_threads_option(sim)
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


def _read_lists(paths: Sequence[Path]) -> list[dict[str, str]]:
    """Pool evaluation lists; with several, ids get their list's folder name so they stay distinct."""
    from usef.evaluate import read_eval_list

    items: list[dict[str, str]] = []
    for path in paths:
        listed = read_eval_list(path)
        if len(paths) > 1:
            # dev lists number their items from 000000 each: the folder tells them apart
            listed = [{**item, "id": f"{path.resolve().parent.name}/{item['id']}"} for item in listed]
        items += listed
    seen: set[str] = set()
    for item in items:
        if item["id"] in seen:
            raise UsageError(f"item id {item['id']!r} appears twice in the pooled lists")
        seen.add(item["id"])
    return items


def _print_similarity(record: dict[str, Any], out_dir: Path) -> None:
    measure = record["similarity"]
    print(f"similarity: {measure['kind']} = {measure['label']}; {measure['alike']} = more alike")
    series = list(dict.fromkeys(row["series"] for row in record["rows"]))
    width = max([6, *(len(name) for name in series)])
    print(f"{'bin':>4} {'similarity':>15} {'series':<{width}} {'n':>4} {'SI-SDRi':>8} {'95% CI':>16} "
          f"{'fail':>5} {'conf':>5}")
    for row in record["rows"]:
        span = f"{_format(row['similarity_low'])}..{_format(row['similarity_high'])}"
        ci = f"[{_format(row['ci95_low'])}, {_format(row['ci95_high'])}]"
        print(f"{row['bin']!s:>4} {span:>15} {row['series']:<{width}} {row['n']:>4} {_format(row['mean']):>8} "
              f"{ci:>16} {_format(row['failure_rate']):>5} {_format(row['confusion_rate']):>5}")
    for trend in record["trend"]:
        print(f"trend of {trend['series']}: {_format(trend['slope'], '+.3f')} dB per {measure['unit']} "
              f"[{_format(trend['ci95_low'], '+.3f')}, {_format(trend['ci95_high'], '+.3f')}]")
    print(f"errors: {record['n_errors']}; unknown similarity: {record['n_unknown_similarity']}; "
          f"results in {out_dir}")


def _similarity(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from usef.report.similarity import resolve_kind, similarity_study

    if args.limit is not None and args.limit <= 0:
        raise UsageError("--limit must be positive")
    if args.bins < 1:
        raise UsageError(f"--bins must be >= 1, got {args.bins}")
    if args.bootstrap < 1:
        raise UsageError(f"--bootstrap must be >= 1, got {args.bootstrap}")
    if args.seed < 0:  # numpy's generators take non-negative seeds only
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    apply_threads(args.threads)
    items = _read_lists(args.lists)[: args.limit]
    if not items:
        raise UsageError(f"{', '.join(map(str, args.lists))}: the evaluation list is empty")
    lacking = [item["id"] for item in items if not item.get("interferer")]
    if lacking:  # checked before loading the models: the list is the user's to fix
        raise UsageError(f"{len(lacking)} item(s) have no interferer (e.g. {lacking[0]!r}); the similarity "
                         "study needs an interferer column (the other talkers) in the list")
    kind = resolve_kind(args.similarity)
    if kind == "dvector":
        from usef.report.similarity import resemblyzer_available

        if not resemblyzer_available():
            raise UsageError("--similarity dvector needs resemblyzer: pip install 'usef[resemblyzer]'")
    extractors, requested = _load_models(args.model, args.device)
    logger.info("similarity measure: %s%s", kind, " (auto)" if args.similarity == "auto" else "")

    settings = {
        "command": "usef study " + shlex.join(argv),
        "lists": [str(path) for path in args.lists],
        "device": args.device,
        "limit": args.limit,
        "requested_models": requested,
        "requested_similarity": args.similarity,
    }
    bar = ItemProgress(len(items) * len(extractors), unit="run")
    try:
        record = similarity_study(
            extractors, items, args.out_dir, kind=kind, n_bins=args.bins, seed=args.seed,
            n_boot=args.bootstrap, progress=bar, settings=settings,
        )
    finally:
        bar.close()
    _print_similarity(record, args.out_dir)
    return 1 if record["n_errors"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    studies = {"reference-length": _reference_length, "similarity": _similarity}
    return run_command(build_parser(), argv, lambda args: studies[args.study](args, argv),
                       errors=(ValueError, FileNotFoundError, ImportError))


if __name__ == "__main__":
    sys.exit(main())
