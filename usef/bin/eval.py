"""``usef eval``: score a model on an evaluation list or a Libri2Mix subset.

Exit codes: 0 every item evaluated, 1 some items failed (see failures.csv),
2 usage or configuration error (bad CSV, missing LibriMix metadata, unknown model).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from usef.audio import LEVELS
from usef.bin import (
    HelpFormatter,
    ItemProgress,
    ModelsByRate,
    UsageError,
    add_precision_option,
    add_threads_option,
    apply_threads,
    rate_of,
    run_command,
)
from usef.data.librimix import (
    enrollment_list_format,
    make_enrollment_list,
    metadata_path,
    read_enrollment_list,
    read_metadata,
    write_enrollment_list,
)
from usef.evaluate import METRIC_COLUMNS, evaluate_list, read_eval_list

logger = logging.getLogger("usef.eval")

EPILOG = """\
examples:
  # a CSV with columns mixture,reference,target[,id,interferer] (paths relative to the CSV)
  usef eval --list eval.csv --out-dir exp/eval_default --model default --device cpu

  # the Libri2Mix 8 kHz min test set, both talkers as targets, seeded enrollment
  usef eval --libri2mix /data/Libri2Mix --subset test --sample-rate 8000 --mode min \\
      --mix-type mix_clean --out-dir exp/eval_l2m --no-pesq

  # dev set with the recipe's stage-1 list (mixture_ID,target_index,reference_path)
  usef eval --libri2mix /data/Libri2Mix --subset dev --enrollment exp/dev_enrollment.csv \\
      --out-dir exp/eval_dev

outputs in --out-dir: metrics.csv (one row per item, with the model that served it),
failures.csv, summary.json, estimates/<id>.wav
(and enrollment.csv for --libri2mix without --enrollment, reused on later runs)
"""

# mix_single holds one talker only, so it has no second target
MIX_TYPES = ("mix_clean", "mix_both")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="usef eval",
        description="Extract the target talker from every mixture of a list and "
        "report SI-SDR(i), SDR(i), PESQ, STOI and the confusion rate.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--list", type=Path, metavar="CSV", help="evaluation list")
    source.add_argument("--libri2mix", type=Path, metavar="ROOT", help="Libri2Mix root")
    add = parser.add_argument
    add("--out-dir", type=Path, required=True, help="where results are written")
    add("--model", default="default",
        help="bundled name (usef-conformer-8k ...), model directory, or default: per item, the bundled "
             "model for its rate (8 kHz model below 16 kHz, 16 kHz model from 16 kHz)")
    add("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    add("--no-pesq", action="store_true", help="skip PESQ (the slowest metric)")
    add("--no-stoi", action="store_true", help="skip STOI")
    add("--no-estimates", action="store_true", help="do not write estimates/<id>.wav")
    add("--limit", type=int, default=None, help="evaluate only the first N items")
    add("--confidence", action="store_true",
        help="also score each output's confidence (two more model passes; needs a model with a fitted "
             "confidence map, which --model default then picks): a confidence column, AUCs and false "
             "alarms in summary.json")
    add("--level", choices=LEVELS, default="auto",
        help="output level rule (default auto: the model's own level when it was trained, else fitted to "
             "the mixture)")
    add("--shifts", type=int, default=None,
        help="average this many passes on STFT frame grids offset by a fraction of the hop (default: the "
             "model card's choice, else 1)")
    add_precision_option(parser)
    add_threads_option(parser)
    add = parser.add_argument_group("Libri2Mix options").add_argument
    add("--subset", default="test", help="test | dev | train-100 | train-360")
    add(
        "--sample-rate",
        type=int,
        default=8000,
        choices=(8000, 16000),
        help="wav8k / wav16k",
    )
    add("--mode", default="min", choices=("min", "max"), help="LibriMix mode")
    add("--mix-type", default="mix_clean", choices=MIX_TYPES, help="mixture type")
    add("--seed", type=int, default=0, help="seed of the enrollment draw")
    add(
        "--enrollment",
        type=Path,
        metavar="CSV",
        default=None,
        help="enrollment list: usef's CSV (mixture_ID,target_index,reference_path, e.g. the recipe's) or "
        "SpeakerBeam's map_mixture2enrollment (the list published Libri2Mix TSE results use), detected; "
        "default OUT_DIR/enrollment.csv, drawn with --seed on the first run",
    )
    return parser


def libri2mix_items(
    root: Path,
    subset: str,
    sample_rate: int,
    mode: str,
    mix_type: str,
    enrollment: Path,
    seed: int,
) -> list[dict[str, str]]:
    """Two items per mixture (each source as target, id ``<mixture_ID>_s<k+1>``),
    sorted by mixture ID, references from a ``usef.data.librimix`` enrollment list.

    ``enrollment`` is read if it exists; otherwise ``make_enrollment_list(rows, seed)``
    (another utterance of the target's speaker per target) is written there, so
    later runs, training's dev lists and this command share one format and reuse
    one draw. Raises UsageError when the metadata is missing or the list lacks a target.
    """
    # absolute root: the list stores paths relative to it and must resolve from any cwd
    root = Path(root).resolve()
    meta = metadata_path(root, sample_rate, mode, subset, mix_type)
    if not meta.is_file():
        raise UsageError(f"Libri2Mix metadata not found: {meta}")
    rows = read_metadata(meta, root)
    if any(len(row.sources) != 2 for row in rows):
        raise UsageError(f"{meta}: expected two sources per mixture (Libri2Mix)")

    if enrollment.is_file():
        entries = read_enrollment_list(enrollment, rows=rows)
    else:
        # drawn over the metadata's own row order, as Libri2MixTSE does, so a
        # recipe list and this one agree for the same seed
        entries = make_enrollment_list(rows, seed)
        enrollment.parent.mkdir(parents=True, exist_ok=True)
        write_enrollment_list(enrollment, entries, root)
        logger.info(
            "wrote %d enrollment pairs (seed %d) to %s", len(entries), seed, enrollment
        )
    references = {(e.mixture_id, e.target_index): e.reference_path for e in entries}

    items: list[dict[str, str]] = []
    for row in sorted(rows, key=lambda r: r.mixture_id):
        for k in range(2):
            item_id = f"{row.mixture_id}_s{k + 1}"
            stored = references.get((row.mixture_id, k))
            if stored is None:
                raise UsageError(
                    f"{enrollment} has no entry for mixture_ID {row.mixture_id} "
                    f"target_index {k} ({item_id}); delete it or pass another "
                    "--enrollment / --out-dir"
                )
            reference = Path(stored)
            items.append(
                {
                    "id": item_id,
                    "mixture": str(row.mixture_path),
                    "reference": str(reference if reference.is_absolute() else root / reference),
                    "target": str(row.sources[k]),
                    "interferer": str(row.sources[1 - k]),
                }
            )
    return items


def _format(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _print_summary(summary: dict[str, Any], out_dir: Path) -> None:
    metrics = summary.get("metrics", {})
    print(
        f"{'metric':<18}{'mean':>9}{'median':>9}{'ci95 low':>10}{'ci95 high':>10}{'n':>7}"
    )
    for name in [*METRIC_COLUMNS, "si_sdr_interferer"]:
        if name not in metrics:
            continue
        s = metrics[name]
        print(
            f"{name:<18}{_format(s['mean']):>9}{_format(s['median']):>9}"
            f"{_format(s['ci95_low']):>10}{_format(s['ci95_high']):>10}{s['n']:>7}"
        )
    print(f"failure rate (si_sdr_imp < 0): {_format(summary.get('failure_rate'))}")
    if "confusion_rate" in summary:
        print(f"confusion rate: {_format(summary.get('confusion_rate'))}")
    level = summary.get("level") or {}
    if level.get("n"):
        print(f"output level vs target: median {_format(level['median_db'])} dB, 95 % within "
              f"+-{_format(level['abs_p95_db'])} dB; over full scale: {level['n_over_full_scale']} of "
              f"{level['n_headroom_items']} items whose mixture peaks <= 0.9")
    absent = summary.get("target_absent")
    if absent:
        print(f"target-absent items: {absent['n']}, output vs mixture median "
              f"{_format(absent['output_to_mixture_db_median'])} dB (target-present items: "
              f"{_format(absent['present_output_to_mixture_db_median'])} dB)")
    conf = summary.get("confidence")
    if conf:
        print(f"confidence AUC: present vs absent {_format(conf['auc_present_vs_absent'])}, correct vs confused "
              f"{_format(conf['auc_correct_vs_confused'])}; at {_format(conf['threshold'])}: false alarms "
              f"{_format(conf['false_alarm_rate'])}, misses {_format(conf['miss_rate'])}")
    print(
        f"items: {summary['n_items']}, errors: {summary['n_failed_items']}; results in {out_dir}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv, _evaluate, errors=(ValueError, FileNotFoundError))


def _evaluate(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit <= 0:
        raise UsageError("--limit must be positive")
    if args.list is not None:
        items = read_eval_list(args.list)
        sample_rate = None
        # absolute: `usef report` reads it from any working directory
        source: dict[str, Any] = {"list": str(args.list.resolve())}
    else:
        if args.enrollment is not None and not args.enrollment.is_file():
            raise UsageError(f"--enrollment {args.enrollment}: no such file")
        enrollment = args.enrollment or args.out_dir / "enrollment.csv"
        enrollment_existed = enrollment.is_file()
        items = libri2mix_items(args.libri2mix, args.subset, args.sample_rate, args.mode,
                                args.mix_type, enrollment, args.seed)
        sample_rate = args.sample_rate
        source = {
            "libri2mix": str(args.libri2mix.resolve()),
            "subset": args.subset,
            "sample_rate": args.sample_rate,
            "mode": args.mode,
            "mix_type": args.mix_type,
            "enrollment": str(Path(enrollment).resolve()),
            # which list: SpeakerBeam's map_mixture2enrollment (published results) or usef's
            "enrollment_source": enrollment_list_format(enrollment),
            # the seed only when this run drew the list; a given or reused list has its own
            "enrollment_seed": None if enrollment_existed else args.seed,
        }
    if not items:
        raise UsageError("the evaluation list is empty")
    if args.limit is not None:
        items = items[: args.limit]
    apply_threads(args.threads)
    models = ModelsByRate(args.model, args.device, need_confidence=args.confidence, level=args.level,
                          shifts=args.shifts, precision=args.precision)
    # every model the run needs is loaded now: a bad name or folder is a usage error (exit 2)
    # before any item runs, not a failure of every item
    for rate in sorted({sample_rate or rate_of(item["mixture"]) for item in items} - {None}) or [None]:
        models(rate)
    served: dict[str, int] = {}
    rates: dict[str, int] = {}

    def extract_fn(mixture: np.ndarray, reference: np.ndarray, rate: int):
        model = models(rate)
        if model.name not in served:
            logger.info("using model %s (%d Hz) for %d Hz input", model.name, model.sample_rate, rate)
        served[model.name] = served.get(model.name, 0) + 1
        rates[model.name] = int(model.sample_rate)
        metadata["model"]["name"] = " + ".join(sorted(served))  # what `usef compare` shows
        if len(rates) == 1:
            metadata["model"]["sample_rate"] = int(model.sample_rate)
        metadata["model"].setdefault("shifts", {})[model.name] = getattr(model, "shifts", 1)
        metadata["model"]["precision"] = args.precision
        if not args.confidence:
            return model.extract(mixture, reference, sample_rate=rate), {"model": model.name}
        estimate, score = model.extract(mixture, reference, sample_rate=rate, return_confidence=True)
        return estimate, {"model": model.name, "confidence": score,
                          "confidence_threshold": model.confidence_map().threshold}

    metadata = {
        # items per model and each model's rate, filled in while the run goes
        "model": {"requested": args.model, "device": args.device, "served": served, "sample_rates": rates},
        "data": source,
    }
    bar = ItemProgress(len(items))
    try:
        summary = evaluate_list(
            items,
            extract_fn,
            args.out_dir,
            sample_rate=sample_rate,
            with_pesq=not args.no_pesq,
            with_stoi=not args.no_stoi,
            write_estimates=not args.no_estimates,
            progress=bar,
            metadata=metadata,
        )
    finally:
        bar.close()
    _print_summary(summary, args.out_dir)
    return 1 if summary["n_failed_items"] else 0


if __name__ == "__main__":
    sys.exit(main())
