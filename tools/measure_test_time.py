"""Score test-time variants of extraction against plain passes on an eval list (research tool).

Two families, each scored per item as SI-SDRi against the target, paired with a baseline:

* ``self-enroll``: a second pass conditioned on the first pass's estimate. Variants: the estimate
  alone as the reference (scaled to the reference's RMS), the reference and the estimate
  concatenated, both pooled as two enrollment clips (``enrollment_state``), and the average of
  the first pass with the pooled pass. Baseline: one plain pass; ``shifts2`` (two frame-grid
  passes, the same cost as a second pass) is scored beside them.
* ``ensemble``: the outputs of several weight sets, each run at the three frame-grid offsets of
  ``shifts=3``, level-matched to the first model's first pass (least-squares gain) and averaged
  in fixed combinations. Baseline: the first model's three passes (what ``shifts: 3`` ships).
* ``residual``: when the model took the wrong talker, the residual (mixture - output) holds the
  target; re-extract from it. Scored: the output (``base``, three passes), the residual's
  re-extraction (``leak``, three passes), the swap where the confidence cues say so
  (``leak_db - keep_db > θ``, :mod:`usef.confidence`) and an oracle that swaps only the confused
  items where the swap helps. Needs the list's ``interferer`` column.

Example:
    python tools/measure_test_time.py self-enroll --list work_data/dev8k/eval.csv --limit 50 \\
        --model pretrained/usef-conformer-8k --out docs/results/self_enrollment_dev8k.json
    python tools/measure_test_time.py ensemble --list work_data/dev8k/eval.csv \\
        --model d=pretrained/usef-conformer-8k s4=pretrained/usef-conformer-8k-stage4 \\
        s7=exp/usef8k_stage7/best eq=pretrained/usef-conformer-8k-equal --out docs/results/ensembles_dev8k.json
    python tools/measure_test_time.py residual --list work_data/dev8k/eval.csv \\
        --model pretrained/usef-conformer-8k --out docs/results/residual_swap_dev8k.json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from usef import confidence
from usef.audio_chunks import grid_offsets
from usef.checkpoint import load_pretrained
from usef.metrics import si_sdr, si_sdr_imp

# member passes (model key, grid offset index of shifts=3) averaged by each ensemble combination;
# every member is level-matched to ANCHOR's first pass, whose three passes are the baseline
ANCHOR = "d"
ENSEMBLES = {
    "d3": [("d", 0), ("d", 1), ("d", 2)],
    "s4_3": [("s4", 0), ("s4", 1), ("s4", 2)],
    "s7_3": [("s7", 0), ("s7", 1), ("s7", 2)],
    "d2+s4": [("d", 0), ("d", 1), ("s4", 2)],
    "d+s4+s7": [("d", 0), ("s4", 1), ("s7", 2)],
    "d+s4+eq": [("d", 0), ("s4", 1), ("eq", 2)],
    "d2+eq": [("d", 0), ("d", 1), ("eq", 2)],
    "d3+s4_3": [(m, k) for m in ("d", "s4") for k in range(3)],
    "d3+s4_3+s7_3": [(m, k) for m in ("d", "s4", "s7") for k in range(3)],
    "all12": [(m, k) for m in ("d", "s4", "s7", "eq") for k in range(3)],
}


def _items(eval_list: Path, limit: int, keys=("mixture", "reference", "target")):
    # the named columns as float arrays, in list order
    with open(eval_list, newline="") as handle:
        for i, row in enumerate(csv.DictReader(handle)):
            if i >= limit:
                return
            yield tuple(sf.read(eval_list.parent / row[key])[0] for key in keys)


def _batch(wave: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(wave.astype(np.float32))[None]


def _condition(model, reference: np.ndarray):
    return model.prepare_condition(_batch(reference), torch.tensor([len(reference)]))


def self_enroll_scores(model, mixture: np.ndarray, reference: np.ndarray, target: np.ndarray) -> dict[str, float]:
    x = _batch(mixture)
    condition = _condition(model, reference)
    first = model.extract(x, condition)[0].numpy()
    estimate = first / (np.std(first) + 1e-8) * np.std(reference)
    both = np.zeros((2, max(len(reference), len(estimate))), np.float32)
    both[0, :len(reference)], both[1, :len(estimate)] = reference, estimate
    state = model.enrollment_state(torch.from_numpy(both), torch.tensor([len(reference), len(estimate)]))
    pooled = model.extract(x, model.enrollment_condition([state]))[0].numpy()
    outputs = {
        "base": first,
        "shifts2": model.extract(x, condition, shifts=2)[0].numpy(),
        "estimate_only": model.extract(x, _condition(model, estimate))[0].numpy(),
        "concat": model.extract(x, _condition(model, np.concatenate([reference, estimate])))[0].numpy(),
        "pooled": pooled,
        "average_first_pooled": 0.5 * (first + pooled),
    }
    return {name: si_sdr_imp(y, target, mixture) for name, y in outputs.items()}


def ensemble_scores(models: dict, mixture: np.ndarray, reference: np.ndarray, target: np.ndarray) -> dict[str, float]:
    x = _batch(mixture)
    passes = {}
    for key, model in models.items():
        condition = _condition(model, reference)
        for k, offset in enumerate(grid_offsets(model.stft.hop_length, 3)):
            delayed = torch.nn.functional.pad(x, (offset, 0))
            passes[key, k] = model.extract(delayed, condition)[0, offset:].numpy().astype(np.float64)
    anchor = passes[ANCHOR, 0]
    # members trained with different losses come out at different gains (SI-SDR vs SNR)
    passes = {key: y * (np.dot(anchor, y) / (np.dot(y, y) + 1e-12)) for key, y in passes.items()}
    return {name: si_sdr_imp(np.mean([passes[k] for k in keys], axis=0), target, mixture)
            for name, keys in ENSEMBLES.items() if all(k in passes for k in keys)}


SWAP_MARGINS_DB = (5.0, 10.0, 20.0)


def residual_scores(model, mixture: np.ndarray, reference: np.ndarray, target: np.ndarray,
                    interferer: np.ndarray) -> dict[str, float]:
    x = _batch(mixture)
    condition = _condition(model, reference)
    output = model.extract(x, condition, shifts=3)[:, : x.shape[1]]
    keep_db, leak_db = confidence.features(confidence.energies(model, x, condition, output))[0, 1:]
    leak = model.extract(x - output, condition, shifts=3)[0, : x.shape[1]].numpy()
    output = output[0].numpy()
    base, swapped = si_sdr_imp(output, target, mixture), si_sdr_imp(leak, target, mixture)
    confused = si_sdr(output, interferer) > si_sdr(output, target)
    scores = {"base": base, "leak": swapped, "oracle": max(base, swapped) if confused else base,
              "confused": float(confused)}
    for margin in SWAP_MARGINS_DB:
        scores[f"swap_{margin:g}dB"] = swapped if leak_db - keep_db > margin else base
    return scores


def summarise(scores: dict[str, list[float]], baseline: str) -> list[str]:
    base = np.array(scores[baseline])
    lines = []
    for name, values in scores.items():
        v = np.array(values)
        delta = v - base
        lines.append(f"{name:14s} mean {v.mean():6.2f}  delta {delta.mean():+.2f} "
                     f"(se {delta.std() / np.sqrt(len(delta)):.2f})  better {np.mean(delta > 0):.2f}  "
                     f"failure {np.mean(v < 0):.3f}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["self-enroll", "ensemble", "residual"])
    parser.add_argument("--list", type=Path, required=True, help="eval.csv of tools/make_dev_set.py")
    parser.add_argument("--model", nargs="+", required=True,
                        help="a model folder (self-enroll) or KEY=FOLDER pairs, keys d s4 s7 eq (ensemble)")
    parser.add_argument("--limit", type=int, default=10**9, help="score only the first N items")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="per-item scores (JSON)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    keys = ("mixture", "reference", "target")
    if args.mode in ("self-enroll", "residual"):
        model = load_pretrained(args.model[0]).eval()
        scorer = self_enroll_scores if args.mode == "self-enroll" else residual_scores
        score, baseline = (lambda *item: scorer(model, *item)), "base"
        if args.mode == "residual":
            keys += ("interferer",)
    else:
        pairs = dict(p.split("=", 1) for p in args.model if "=" in p)
        known = {key for keys in ENSEMBLES.values() for key, _ in keys}
        if len(pairs) != len(args.model) or ANCHOR not in pairs or not set(pairs) <= known:
            parser.error(f"ensemble: --model takes KEY=FOLDER pairs with KEY in {sorted(known)}, "
                         f"{ANCHOR!r} included, got {args.model}")
        models = {key: load_pretrained(folder).eval() for key, folder in pairs.items()}
        score, baseline = (lambda *item: ensemble_scores(models, *item)), f"{ANCHOR}3"
    scores: dict[str, list[float]] = {}
    with torch.inference_mode():
        for item in _items(args.list, args.limit, keys):
            for name, value in score(*item).items():
                scores.setdefault(name, []).append(value)
    lines = summarise(scores, baseline)
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"list": str(args.list), "models": args.model, "baseline": baseline,
                                    "summary": lines, "scores": scores}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
