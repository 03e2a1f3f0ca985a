#!/usr/bin/env python
"""What streaming costs: SI-SDRi and real-time factor of ``usef.Stream`` at several latencies
versus offline extraction (numbers for the README, not a test).

For each item of an eval list (``mixture,reference,target`` paths relative to the CSV) the
offline estimate (``Extractor.extract``, the whole mixture at once) and a streamed estimate per
latency (``usef.Stream``, the mixture pushed in ``--chunk`` second pieces, as a live source
would deliver it) are scored by SI-SDRi against the target. The table gives the mean SI-SDRi,
the paired difference to offline (mean and 95 % confidence half-width over items), the
real-time factor (processing seconds / audio seconds; the reference encoding counts for
offline, not for the stream, where it happens once before the audio starts), the median time of
a block with its full window (context + latency, what a long stream runs at) relative to the
hop it must keep up with (the steady-state real-time factor; the items' first blocks are
shorter and cheaper) and the slowest block relative to the hop (over 1.0 that block came late). Torch runs on ``--threads`` threads (default 1).

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE nice -n 10 \\
        python tools/measure_streaming.py --list work_data/dev8k/eval.csv --limit 100
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np


def _read_list(path: Path, limit: int) -> list[dict]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    base = path.parent
    return [{key: str(base / row[key]) for key in ("mixture", "reference", "target")} for row in rows[:limit]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", default="work_data/dev8k/eval.csv", help="CSV with mixture,reference,target")
    parser.add_argument("--limit", type=int, default=100, help="use the first N items")
    parser.add_argument("--model", default="usef-conformer-8k")
    parser.add_argument("--latencies", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0])
    parser.add_argument("--context", type=float, default=None, help="seconds of past input per block "
                        "(default: usef.stream's)")
    parser.add_argument("--chunk", type=float, default=0.02, help="seconds per push")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--shifts", type=int, default=1,
                        help="frame-grid passes averaged, offline and per block alike (default 1, as usef.Stream)")
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args(argv)

    import torch

    import usef
    from usef import audio
    from usef.metrics import si_sdr_imp
    from usef.stream import DEFAULT_CONTEXT, make_schedule

    torch.set_num_threads(args.threads)
    context = DEFAULT_CONTEXT if args.context is None else args.context
    extractor = usef.load_model(args.model, device="cpu", shifts=args.shifts)
    items = _read_list(Path(args.list), args.limit)
    scores: dict[str, list[float]] = {"offline": []}
    seconds: dict[str, float] = {"offline": 0.0}
    slowest: dict[str, float] = {}
    block_times: dict[str, list[float]] = {}
    duration = 0.0
    for lat in args.latencies:
        scores[f"{lat:g}"], seconds[f"{lat:g}"], slowest[f"{lat:g}"] = [], 0.0, 0.0
        block_times[f"{lat:g}"] = []
    for i, item in enumerate(items):
        mixture, rate = audio.load_audio(item["mixture"], "mixture")
        reference, ref_rate = audio.load_audio(item["reference"], "reference")
        target, _ = audio.load_audio(item["target"], "target")
        duration += mixture.shape[0] / rate
        start = time.perf_counter()
        estimate = extractor.extract(mixture, reference, sample_rate=rate, reference_sample_rate=ref_rate)
        seconds["offline"] += time.perf_counter() - start
        scores["offline"].append(si_sdr_imp(estimate, target, mixture))
        step = max(1, round(args.chunk * rate))
        for lat in args.latencies:
            key = f"{lat:g}"
            stream = usef.Stream(extractor, reference, latency=lat, sample_rate=rate,
                                 reference_sample_rate=ref_rate, context=context, shifts=args.shifts)
            hop_seconds = stream.schedule.hop / stream.model_rate
            parts = []
            for first in range(0, mixture.shape[0], step):
                start = time.perf_counter()
                parts.append(stream.push(mixture[first : first + step]))
                spent = time.perf_counter() - start
                seconds[key] += spent
                # a push of one chunk (shorter than a hop) runs at most one block
                slowest[key] = max(slowest[key], spent / hop_seconds)
                if parts[-1].size and first >= stream.schedule.window * rate / stream.model_rate:
                    block_times[key].append(spent / hop_seconds)  # a block with its full window
            start = time.perf_counter()
            parts.append(stream.flush())
            seconds[key] += time.perf_counter() - start
            streamed = np.concatenate(parts)
            scores[key].append(si_sdr_imp(streamed, target, mixture))
        print(f"{i + 1}/{len(items)} offline {scores['offline'][-1]:6.2f} "
              + " ".join(f"{lat:g}s {scores[f'{lat:g}'][-1]:6.2f}" for lat in args.latencies),
              file=sys.stderr, flush=True)

    offline = np.asarray(scores["offline"])
    rows = []
    print(f"\n{len(items)} items of {args.list}, {duration:.1f} s of audio, model {extractor.name}, "
          f"{args.threads} thread(s), push {args.chunk:g} s, context {context:g} s\n")
    print("| latency | hop / crossfade / lookahead | SI-SDRi (dB) | vs offline (dB, 95 % CI) | RTF | full block / hop (median) | slowest block / hop |")
    print("|---|---|---|---|---|---|---|")
    print(f"| offline | - | {offline.mean():.2f} | - | {seconds['offline'] / duration:.3f} | - | - |")
    rows.append({"latency": None, "si_sdri": float(offline.mean()), "rtf": seconds["offline"] / duration})
    for lat in args.latencies:
        key = f"{lat:g}"
        values = np.asarray(scores[key])
        diff = values - offline
        half = 1.96 * diff.std(ddof=1) / np.sqrt(diff.size) if diff.size > 1 else float("nan")
        s = make_schedule(extractor.sample_rate, lat, context=context)
        steady = float(np.median(block_times[key])) if block_times[key] else float("nan")
        r = extractor.sample_rate
        print(f"| {key} s | {s.hop / r:.3f} / {s.fade / r:.3f} / {s.lookahead / r:.3f} s | {values.mean():.2f} | "
              f"{diff.mean():+.2f} ± {half:.2f} | {seconds[key] / duration:.3f} | {steady:.2f} | {slowest[key]:.2f} |")
        rows.append({"latency": lat, "si_sdri": float(values.mean()), "difference": float(diff.mean()),
                     "ci95": float(half), "rtf": seconds[key] / duration, "slowest_block_over_hop": slowest[key],
                     "full_block_over_hop_median": steady,
                     "hop": s.hop / r, "crossfade": s.fade / r, "lookahead": s.lookahead / r})
    if args.json:
        Path(args.json).write_text(json.dumps({"items": len(items), "audio_seconds": duration, "rows": rows,
                                               "context": context, "threads": args.threads}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
