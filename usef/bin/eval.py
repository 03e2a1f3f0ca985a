"""``usef eval``: score a model on an evaluation list or a Libri2Mix subset.

Exit codes: 0 every item evaluated, 1 some items failed (see failures.csv),
2 usage or configuration error (bad CSV, missing LibriMix metadata, unknown model).
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from usef.evaluate import METRIC_COLUMNS, evaluate_list, read_eval_list

logger = logging.getLogger("usef.eval")

EPILOG = """\
examples:
  # a CSV with columns mixture,reference,target[,id,interferer] (paths relative to the CSV)
  usef eval --list eval.csv --out-dir exp/eval_default --model default --device cpu

  # the Libri2Mix 8 kHz min test set, both talkers as targets, seeded enrollment
  usef eval --libri2mix /data/Libri2Mix --subset test --sample-rate 8000 --mode min \\
      --mix-type mix_clean --out-dir exp/eval_l2m --no-pesq

outputs in --out-dir: metrics.csv, failures.csv, summary.json, estimates/<id>.wav
(and enrollment.csv for --libri2mix, reused on later runs)
"""

ENROLLMENT_COLUMNS = (
    "id",
    "mixture_id",
    "target_utterance",
    "speaker",
    "reference_utterance",
    "reference",
)


# mix_single holds one talker only, so it has no second target
MIX_TYPES = ("mix_clean", "mix_both")


class UsageError(Exception):
    """A problem with the command line or its inputs: exit code 2."""


class _HelpFormatter(
    argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter
):
    """Keep the epilog's line breaks and show the defaults that say something."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="usef eval",
        description="Extract the target talker from every mixture of a list and "
        "report SI-SDR(i), SDR(i), PESQ, STOI and the confusion rate.",
        epilog=EPILOG,
        formatter_class=_HelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--list", type=Path, metavar="CSV", help="evaluation list")
    source.add_argument("--libri2mix", type=Path, metavar="ROOT", help="Libri2Mix root")
    add = parser.add_argument
    add("--out-dir", type=Path, required=True, help="where results are written")
    add("--model", default="default", help="pretrained name or model directory")
    add("--device", default="cpu", help="torch device")
    add("--no-pesq", action="store_true", help="skip PESQ (the slowest metric)")
    add("--no-estimates", action="store_true", help="do not write estimates/<id>.wav")
    add("--limit", type=int, default=None, help="evaluate only the first N items")
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
    return parser


def _speaker(utterance: str) -> str:
    # LibriSpeech names are speaker-chapter-utterance
    return utterance.split("-")[0]


def _pick(constructed: Path, listed: str | None) -> Path:
    """Prefer the standard layout; metadata paths are often absolute paths of the generating machine."""
    if constructed.exists() or not listed:
        return constructed
    listed_path = Path(listed)
    return listed_path if listed_path.exists() else constructed


def _read_enrollment(path: Path, root: Path) -> dict[str, Path]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if (
            not reader.fieldnames
            or "id" not in reader.fieldnames
            or "reference" not in reader.fieldnames
        ):
            raise UsageError(
                f"{path}: not an enrollment list (needs columns id, reference)"
            )
        return {row["id"]: (root / row["reference"]) for row in reader}


def libri2mix_items(
    root: Path,
    subset: str,
    sample_rate: int,
    mode: str,
    mix_type: str,
    out_dir: Path,
    seed: int,
) -> list[dict[str, str]]:
    """Two items per mixture (each source as target), references from a seeded enrollment list.

    The reference of a target utterance is another utterance of the same speaker
    drawn from the subset's source files. The draw is written to
    ``out_dir/enrollment.csv`` on the first run and read back on later runs, so
    repeated evaluations use the same references.
    """
    base = root / f"wav{sample_rate // 1000}k" / mode
    meta = base / "metadata" / f"mixture_{subset}_{mix_type}.csv"
    if not meta.is_file():
        raise UsageError(f"Libri2Mix metadata not found: {meta}")
    with open(meta, newline="", encoding="utf-8") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda r: r.get("mixture_ID", ""))
    if not rows or "mixture_ID" not in rows[0]:
        raise UsageError(
            f"{meta}: expected a non-empty LibriMix metadata CSV with a mixture_ID column"
        )

    mixtures = []
    pool: dict[str, Path] = {}  # utterance -> one source file holding it
    for row in rows:
        utterances = row["mixture_ID"].split("_")
        if len(utterances) != 2:
            raise UsageError(
                f"{meta}: mixture_ID {row['mixture_ID']!r} is not a two-talker id"
            )
        sources = [
            _pick(
                base / subset / f"s{k + 1}" / f"{row['mixture_ID']}.wav",
                row.get(f"source_{k + 1}_path"),
            )
            for k in range(2)
        ]
        mixture = _pick(
            base / subset / mix_type / f"{row['mixture_ID']}.wav",
            row.get("mixture_path"),
        )
        mixtures.append((row["mixture_ID"], mixture, utterances, sources))
        for utterance, source in zip(utterances, sources):
            pool.setdefault(utterance, source)

    by_speaker: dict[str, list[str]] = {}
    for utterance in sorted(pool):
        by_speaker.setdefault(_speaker(utterance), []).append(utterance)

    enrollment_path = out_dir / "enrollment.csv"
    existing = (
        _read_enrollment(enrollment_path, root) if enrollment_path.is_file() else None
    )
    rng = np.random.default_rng(seed)
    items: list[dict[str, str]] = []
    enrollment: list[dict[str, str]] = []
    skipped = 0
    for mixture_id, mixture, utterances, sources in mixtures:
        for k in range(2):
            item_id = f"{mixture_id}_s{k + 1}"
            utterance = utterances[k]
            candidates = [u for u in by_speaker[_speaker(utterance)] if u != utterance]
            if existing is not None:
                if item_id not in existing:
                    raise UsageError(
                        f"{enrollment_path} has no entry for {item_id}; delete it or use another --out-dir"
                    )
                reference = existing[item_id]
            elif not candidates:
                skipped += 1
                logger.warning(
                    "speaker %s has a single utterance; skipping %s",
                    _speaker(utterance),
                    item_id,
                )
                continue
            else:
                chosen = candidates[int(rng.integers(len(candidates)))]
                reference = pool[chosen]
                enrollment.append(
                    {
                        "id": item_id,
                        "mixture_id": mixture_id,
                        "target_utterance": utterance,
                        "speaker": _speaker(utterance),
                        "reference_utterance": chosen,
                        "reference": _relative(reference, root),
                    }
                )
            items.append(
                {
                    "id": item_id,
                    "mixture": str(mixture),
                    "reference": str(reference),
                    "target": str(sources[k]),
                    "interferer": str(sources[1 - k]),
                }
            )
    if existing is None:
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(enrollment_path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(
                handle, fieldnames=list(ENROLLMENT_COLUMNS), lineterminator="\n"
            )
            writer.writeheader()
            writer.writerows(enrollment)
        logger.info(
            "wrote %d enrollment pairs (seed %d) to %s",
            len(enrollment),
            seed,
            enrollment_path,
        )
    if skipped:
        logger.warning(
            "skipped %d items without another utterance of their speaker", skipped
        )
    return items


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path.resolve())


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
    print(
        f"items: {summary['n_items']}, errors: {summary['n_failed_items']}; results in {out_dir}"
    )


def _load_model(name: str, device: str) -> Any:
    import usef

    load_model = getattr(usef, "load_model", None)
    if load_model is None:
        raise UsageError("usef.load_model is not available in this installation")
    try:
        return load_model(name, device=device)
    except (
        Exception
    ) as exc:  # unknown name, missing directory, bad device: all configuration
        raise UsageError(
            f"cannot load model {name!r}: {type(exc).__name__}: {exc}"
        ) from exc


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on usage errors (2)
        return int(exc.code or 0)
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
        )
    if args.limit is not None and args.limit <= 0:
        print("usef eval: error: --limit must be positive", file=sys.stderr)
        return 2

    try:
        if args.list is not None:
            items = read_eval_list(args.list)
            sample_rate = None
            source: dict[str, Any] = {"list": str(args.list)}
        else:
            items = libri2mix_items(
                args.libri2mix,
                args.subset,
                args.sample_rate,
                args.mode,
                args.mix_type,
                args.out_dir,
                args.seed,
            )
            sample_rate = args.sample_rate
            source = {
                "libri2mix": str(args.libri2mix),
                "subset": args.subset,
                "sample_rate": args.sample_rate,
                "mode": args.mode,
                "mix_type": args.mix_type,
                "enrollment_seed": args.seed,
            }
        if not items:
            raise UsageError("the evaluation list is empty")
        if args.limit is not None:
            items = items[: args.limit]
        model = _load_model(args.model, args.device)
    except (UsageError, ValueError, FileNotFoundError) as exc:
        print(f"usef eval: error: {exc}", file=sys.stderr)
        return 2

    logger.info(
        "using model %s (%d Hz) from %r on %s",
        model.name,
        model.sample_rate,
        args.model,
        args.device,
    )

    def extract_fn(mixture: np.ndarray, reference: np.ndarray, rate: int) -> np.ndarray:
        return model.extract(mixture, reference, sample_rate=rate)

    metadata = {
        "model": {
            "name": model.name,
            "sample_rate": int(model.sample_rate),
            "requested": args.model,
            "device": args.device,
        },
        "data": source,
    }
    try:
        from tqdm import tqdm

        bar = tqdm(total=len(items), unit="item", disable=None, file=sys.stderr)
    except ImportError:
        bar = None

    def progress(done: int, total: int, row: dict[str, Any]) -> None:
        if bar is not None:
            bar.update(1)

    try:
        summary = evaluate_list(
            items,
            extract_fn,
            args.out_dir,
            sample_rate=sample_rate,
            with_pesq=not args.no_pesq,
            write_estimates=not args.no_estimates,
            progress=progress,
            metadata=metadata,
        )
    except KeyboardInterrupt:
        print("usef eval: interrupted", file=sys.stderr)
        return 130
    finally:
        if bar is not None:
            bar.close()
    _print_summary(summary, args.out_dir)
    return 1 if summary["n_failed_items"] else 0


if __name__ == "__main__":
    sys.exit(main())
