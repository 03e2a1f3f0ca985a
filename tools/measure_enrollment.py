#!/usr/bin/env python
"""Measure how the *structure* of an enrollment changes extraction (issue 15): numbers for the
README, not a test.

Items: two-talker 4 s mixtures of held-out speakers (``egs/speakers/dev_speakers.txt``), SIR
uniform in -5...5 dB, no noise, built like ``tools/make_dev_set.py`` but with a 6 s reference
(``reference_seconds=(6, 6)``, ``min_reference_seconds=6``) disjoint from the target segment.
Items whose reference is shorter than 6 s (a multi-recording speaker whose other recording is
short) are skipped and counted; indices are drawn in order until ``--n`` items are kept.

Part 1, clip structure (every clip enrolled with ``trim=False``, so only the structure differs):

- ``A``: the 6 s reference as one clip;
- ``B1``: one 2 s clip (its first 2 s); ``B2``: two 2 s clips (0-2 s, 2-4 s);
  ``B3``: three 2 s clips (0-2, 2-4, 4-6 s: the same audio as ``A``, cut in three).

Part 2, trimming (energy VAD): the 6 s reference and its first 2 s, each as is and padded with
``--pad-seconds`` of near-silence (white noise at ``--pad-dbfs`` RMS) before and after, enrolled
with ``trim=False`` and ``trim=True``.

Per model and condition: mean SI-SDRi with its 95 % t interval (:func:`usef.metrics.summarize`),
failure rate (SI-SDRi < 0 dB), confusion rate (the estimate's SI-SDR against the interferer above
the one against the target), and paired differences against a baseline condition: mean, the
t interval over items, and a bootstrap interval that resamples *speakers* (items of one speaker
are not independent; the held-out set has about twenty speakers).

    python tools/measure_enrollment.py --n 200 --json work_data/enrollment_study.json

Prints Markdown tables; ``--json`` also writes every per-item value and the summaries.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DEFAULT_MODELS = ("usef-conformer-8k", "embedding-conformer-8k")
SAMPLE_RATE = 8000
REFERENCE_SECONDS = 6.0
CLIP_SECONDS = 2.0

# condition -> (description, which reference part, padded, trim)
#   part "full": the whole 6 s reference; "first": its first 2 s; "split1/2/3": 1, 2 or 3 2-s clips
CONDITIONS: dict[str, tuple[str, str, bool, bool]] = {
    "A": ("one 6 s clip", "full", False, False),
    "B1": ("one 2 s clip (0-2 s)", "split1", False, False),
    "B2": ("two 2 s clips (0-2, 2-4 s)", "split2", False, False),
    "B3": ("three 2 s clips (0-2, 2-4, 4-6 s)", "split3", False, False),
    "A_trim": ("one 6 s clip, trim=True", "full", False, True),
    "A_pad": ("6 s clip padded with silence, trim=False", "full", True, False),
    "A_pad_trim": ("6 s clip padded with silence, trim=True", "full", True, True),
    "B1_trim": ("one 2 s clip, trim=True", "split1", False, True),
    "B1_pad": ("2 s clip padded with silence, trim=False", "split1", True, False),
    "B1_pad_trim": ("2 s clip padded with silence, trim=True", "split1", True, True),
}
# (table, rows as (condition, baseline or None))
TABLES: tuple[tuple[str, tuple[tuple[str, str | None], ...]], ...] = (
    ("Part 1: clip structure (trim=False; differences against A)",
     (("A", None), ("B1", "A"), ("B2", "A"), ("B3", "A"))),
    ("Part 2a: trimming a 6 s clip (differences against the row named)",
     (("A", None), ("A_trim", "A"), ("A_pad", "A"), ("A_pad_trim", "A_pad"))),
    ("Part 2b: trimming a 2 s clip (differences against the row named)",
     (("B1", None), ("B1_trim", "B1"), ("B1_pad", "B1"), ("B1_pad_trim", "B1_pad"))),
)


# -- enrollment clips ----------------------------------------------------------------------------
def split_clips(reference: np.ndarray, rate: int, count: int, seconds: float = CLIP_SECONDS) -> list[np.ndarray]:
    """The first ``count`` consecutive ``seconds``-long clips of ``reference``."""
    size = round(seconds * rate)
    if count < 1 or count * size > reference.shape[0]:
        raise ValueError(f"a {reference.shape[0] / rate:.2f} s reference holds fewer than {count} "
                         f"clips of {seconds} s")
    return [reference[i * size : (i + 1) * size] for i in range(count)]


def pad_with_silence(wave: np.ndarray, rate: int, seconds: float, dbfs: float,
                     rng: np.random.Generator) -> np.ndarray:
    """``wave`` with ``seconds`` of white noise at ``dbfs`` RMS before and after it."""
    size = round(seconds * rate)
    rms = 10.0 ** (dbfs / 20.0)
    before = (rng.standard_normal(size) * rms).astype(np.float32)
    after = (rng.standard_normal(size) * rms).astype(np.float32)
    return np.concatenate([before, wave.astype(np.float32), after])


def condition_clips(name: str, reference: np.ndarray, rate: int, pad: Callable[[np.ndarray], np.ndarray]
                    ) -> tuple[list[np.ndarray], bool]:
    """(clips, trim) of condition ``name`` made from a 6 s ``reference``; ``pad`` adds the silence."""
    _, part, padded, trim = CONDITIONS[name]
    if part == "full":
        clips = [reference]
    else:
        clips = split_clips(reference, rate, int(part[-1]))
    if padded:
        clips = [pad(c) for c in clips]
    return clips, trim


# -- items ---------------------------------------------------------------------------------------
def make_items(dataset, n: int, seed: int, reference_seconds: float = REFERENCE_SECONDS,
               max_draws: int | None = None) -> tuple[list[dict], dict]:
    """The first ``n`` examples of ``dataset`` under ``seed`` whose reference holds at least
    ``reference_seconds`` (cropped to exactly that), with their plans; and the draw counts."""
    fixed = dataset.with_config(seed=int(seed), rank=0, epoch=0)
    rate = fixed.sample_rate
    need = round(reference_seconds * rate)
    max_draws = max_draws or 20 * n
    items, skipped, index = [], 0, 0
    while len(items) < n and index < max_draws:
        plan = fixed.plan(index)
        example = fixed[index]
        if example["reference"].shape[0] < need:
            skipped += 1
        else:
            t, r = plan.target, plan.reference
            same = (t.speaker, t.utterance) == (r.speaker, r.utterance)
            if same and not (r.stop <= t.start or t.stop <= r.start):
                raise RuntimeError(f"item {index}: reference overlaps the target segment")
            items.append({
                "index": index, "speaker": example["speaker"],
                "interferer_speaker": plan.interferers[0].speaker, "sir_db": plan.sir_db,
                "same_recording": same, "mixture": example["mixture"], "target": example["target"],
                "interferer": example["interferer"], "reference": example["reference"][:need],
            })
        index += 1
    if len(items) < n:
        raise RuntimeError(f"only {len(items)} items with a {reference_seconds} s reference in {index} draws")
    return items, {"drawn": index, "kept": len(items), "skipped_short_reference": skipped}


def held_out_dataset(manifests: Sequence[Path], speakers_file: Path, rate: int = SAMPLE_RATE):
    """The held-out dev speakers' mixing dataset, as tools/make_dev_set.py builds it, with a 6 s
    reference disjoint from the target."""
    from usef.data.dynamic_mix import DynamicMixDataset, SpeakerCorpus
    from usef.data.splits import read_speaker_list

    corpus = SpeakerCorpus.merge(*(SpeakerCorpus.from_manifest(p, rate) for p in manifests))
    corpus = corpus.subset(read_speaker_list(speakers_file))
    return DynamicMixDataset(corpus, None, segment_seconds=4.0, sir_range=(-5.0, 5.0),
                             reference_seconds=(REFERENCE_SECONDS, REFERENCE_SECONDS),
                             min_reference_seconds=REFERENCE_SECONDS, interferer_probs=(1.0,))


# -- measuring -----------------------------------------------------------------------------------
def score(estimate: np.ndarray, item: dict) -> dict:
    from usef.metrics import si_sdr

    target_sdr = si_sdr(estimate, item["target"])
    interferer_sdr = si_sdr(estimate, item["interferer"])
    improvement = target_sdr - si_sdr(item["mixture"], item["target"])
    return {"si_sdri": improvement, "si_sdr_interferer": interferer_sdr,
            "confused": bool(interferer_sdr > target_sdr), "failed": bool(improvement < 0.0)}


def measure(extractor, items: Sequence[dict], conditions: Sequence[str], pad_seconds: float, pad_dbfs: float,
            seed: int, log: Callable[[str], None] = print) -> dict[str, list[dict]]:
    """Per condition, one record per item: SI-SDRi, confusion, failure and enrolled seconds."""
    rate = extractor.sample_rate
    results: dict[str, list[dict]] = {c: [] for c in conditions}
    start = time.time()
    for k, item in enumerate(items):
        noise_seed = [int(seed), int(item["index"]), 15]  # same padding for every model and condition

        def pad(wave: np.ndarray, _s=noise_seed) -> np.ndarray:
            return pad_with_silence(wave, rate, pad_seconds, pad_dbfs, np.random.default_rng(_s))

        for name in conditions:
            clips, trim = condition_clips(name, item["reference"], rate, pad)
            enrollment = extractor.enroll(clips, sample_rate=rate, trim=trim)
            estimate = extractor.extract(item["mixture"], enrollment, sample_rate=rate)
            record = score(estimate, item)
            record["enrolled_seconds"] = enrollment.seconds
            results[name].append(record)
        if (k + 1) % 25 == 0 or k + 1 == len(items):
            log(f"  {extractor.name}: {k + 1}/{len(items)} items ({time.time() - start:.0f} s)")
    return results


# -- statistics ----------------------------------------------------------------------------------
def speaker_bootstrap(values: Sequence[float], speakers: Sequence[str], reps: int = 2000,
                      seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of the mean of ``values`` when whole speakers are resampled."""
    values = np.asarray(values, dtype=np.float64)
    groups = {}
    for i, s in enumerate(speakers):
        groups.setdefault(s, []).append(i)
    sums = np.array([values[g].sum() for g in groups.values()])
    counts = np.array([len(g) for g in groups.values()], dtype=np.float64)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(sums), size=(reps, len(sums)))
    means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summarize_condition(records: Sequence[dict]) -> dict:
    """Mean SI-SDRi (95 % t CI), failure and confusion rates and enrolled seconds of one condition."""
    from usef.metrics import summarize

    return {
        "si_sdri": summarize([r["si_sdri"] for r in records]),
        "failure_rate": float(np.mean([r["failed"] for r in records])),
        "confusion_rate": float(np.mean([r["confused"] for r in records])),
        "confused": int(sum(r["confused"] for r in records)),
        "enrolled_seconds_mean": float(np.mean([r["enrolled_seconds"] for r in records])),
    }


def paired_difference(records: Sequence[dict], baseline: Sequence[dict], speakers: Sequence[str],
                      seed: int = 0) -> dict:
    """SI-SDRi of ``records`` minus ``baseline``, item by item: t CI, speaker-bootstrap CI, and
    how many items became / stopped being confused."""
    from usef.metrics import summarize

    if len(records) != len(baseline):
        raise ValueError("records and baseline must cover the same items")
    diff = [r["si_sdri"] - b["si_sdri"] for r, b in zip(records, baseline)]
    low, high = speaker_bootstrap(diff, speakers, seed=seed)
    return {
        **summarize(diff), "speaker_bootstrap_ci95_low": low, "speaker_bootstrap_ci95_high": high,
        "newly_confused": int(sum(r["confused"] and not b["confused"] for r, b in zip(records, baseline))),
        "no_longer_confused": int(sum(b["confused"] and not r["confused"] for r, b in zip(records, baseline))),
    }


def summarize_all(raw: dict[str, list[dict]], speakers: Sequence[str], seed: int = 0) -> dict:
    """``{"conditions": {name: summary}, "differences": {"X-Y": difference}}`` for every table row."""
    pairs = {(name, base) for _, rows in TABLES for name, base in rows if base is not None}
    pairs |= {(name, rows[0][0]) for _, rows in TABLES for name, _ in rows[1:]}  # against the first row
    return {
        "conditions": {name: summarize_condition(records) for name, records in raw.items()},
        "differences": {f"{name}-{base}": paired_difference(raw[name], raw[base], speakers, seed)
                        for name, base in sorted(pairs) if name in raw and base in raw},
    }


def markdown(summaries: dict[str, dict], n: int) -> str:
    lines = []
    for title, rows in TABLES:
        first_row = rows[0][0]
        legend = (f"n = {n} items. SI-SDRi: mean [95 % t CI]. Δ: paired difference against the baseline "
                  "[t CI over items] [speaker-bootstrap CI]; conf. ±: items that became / stopped being "
                  f"confused against the baseline; last column: paired difference against {first_row} [t CI].")
        header = ("| model | condition | enrolled s | SI-SDRi dB | fail % | conf. % | Δ SI-SDRi dB | conf. ± "
                  f"| Δ vs {first_row} dB |")
        lines += [f"### {title}", "", legend, "", header, "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for model, summary in summaries.items():
            for name, baseline in rows:
                s = summary["conditions"][name]
                si = s["si_sdri"]
                cell = f"{si['mean']:.2f} [{si['ci95_low']:.2f}, {si['ci95_high']:.2f}]"
                delta, flips = "", ""
                if baseline is not None:
                    d = summary["differences"][f"{name}-{baseline}"]
                    delta = (f"{d['mean']:+.2f} vs {baseline} [{d['ci95_low']:+.2f}, {d['ci95_high']:+.2f}] "
                             f"[{d['speaker_bootstrap_ci95_low']:+.2f}, {d['speaker_bootstrap_ci95_high']:+.2f}]")
                    flips = f"+{d['newly_confused']} / -{d['no_longer_confused']}"
                first = ""
                if name != rows[0][0]:
                    f = summary["differences"][f"{name}-{rows[0][0]}"]
                    first = f"{f['mean']:+.2f} [{f['ci95_low']:+.2f}, {f['ci95_high']:+.2f}]"
                lines.append(f"| {model} | {name}: {CONDITIONS[name][0]} | {s['enrolled_seconds_mean']:.2f} | "
                             f"{cell} | {100 * s['failure_rate']:.1f} | {100 * s['confusion_rate']:.1f} | "
                             f"{delta} | {flips} | {first} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speech", nargs="*", type=Path,
                        default=[SHARED / "speech" / "manifest.csv", SHARED / "speech_extra" / "manifest.csv"])
    parser.add_argument("--speakers", type=Path, default=ROOT / "egs" / "speakers" / "dev_speakers.txt")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--n", type=int, default=200, help="items kept (each with a full 6 s reference)")
    parser.add_argument("--seed", type=int, default=20261215)
    parser.add_argument("--pad-seconds", type=float, default=1.5)
    parser.add_argument("--pad-dbfs", type=float, default=-60.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    import usef

    torch.set_num_threads(args.threads)
    began = time.time()
    dataset = held_out_dataset(args.speech, args.speakers)
    items, counts = make_items(dataset, args.n, args.seed)
    speakers = [it["speaker"] for it in items]
    per_speaker = {s: speakers.count(s) for s in sorted(set(speakers))}
    print(f"{counts['kept']} items from {counts['drawn']} draws ({counts['skipped_short_reference']} skipped: "
          f"reference < {REFERENCE_SECONDS} s); {len(per_speaker)} target speakers of "
          f"{len(dataset.speech.speakers)}; {sum(it['same_recording'] for it in items)} with target and "
          f"reference from one recording ({time.time() - began:.0f} s)", file=sys.stderr)

    conditions = list(CONDITIONS)
    raw: dict[str, dict[str, list[dict]]] = {}
    summaries: dict[str, dict] = {}
    for model in args.models:
        extractor = usef.load_model(model, device=args.device)
        raw[model] = measure(extractor, items, conditions, args.pad_seconds, args.pad_dbfs, args.seed,
                             log=lambda m: print(m, file=sys.stderr))
        summaries[model] = summarize_all(raw[model], speakers, args.seed)
    table = markdown(summaries, len(items))
    print(table)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "command": "python tools/measure_enrollment.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "config": {"n": args.n, "seed": args.seed, "models": args.models, "pad_seconds": args.pad_seconds,
                       "pad_dbfs": args.pad_dbfs, "sample_rate": SAMPLE_RATE, "segment_seconds": 4.0,
                       "sir_range_db": [-5.0, 5.0], "reference_seconds": REFERENCE_SECONDS,
                       "clip_seconds": CLIP_SECONDS, "speakers_file": str(args.speakers)},
            "conditions": {k: v[0] for k, v in CONDITIONS.items()},
            "counts": {**counts, "target_speakers": per_speaker,
                       "same_recording": int(sum(it["same_recording"] for it in items))},
            "summaries": summaries,
            "items": [
                {"index": it["index"], "speaker": it["speaker"], "interferer_speaker": it["interferer_speaker"],
                 "sir_db": it["sir_db"], "same_recording": it["same_recording"],
                 "results": {m: {c: raw[m][c][k] for c in conditions} for m in args.models}}
                for k, it in enumerate(items)
            ],
            "markdown": table,
            "seconds": time.time() - began,
        }
        args.json.write_text(json.dumps(doc, indent=1))
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
