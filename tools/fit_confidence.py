"""Fit a model's confidence map (:mod:`usef.confidence`) on evaluation lists and store it.

Runs the model over each ``usef eval`` list (target-absent items included: an empty ``target``
cell), records the three re-extraction cues per item, labels each item 1 (the output is the
enrolled talker: target present and not confused with the interferer) or 0 (a confused output,
or a target-absent mixture), fits the logistic map, and with ``--write`` stores it under
``confidence`` in the model folder's ``config.yaml``. Fit on one set and judge on another:

    python tools/make_dev_set.py --target-absent 0.5 --n 200 --seed 20261203 --out work_data/dev8k_absent
    python tools/fit_confidence.py --model pretrained/usef-conformer-8k \\
        --list work_data/dev8k_absent/eval.csv work_data/dev8k_similar/eval.csv --out work_data/fit8k --write
    usef eval --model pretrained/usef-conformer-8k --list OTHER.csv --confidence --out-dir ...

The cues are only informative for a model trained with target-absent mixtures and a
scale-dependent loss (``output_level: calibrated``); the tool refuses other models unless
``--any-model`` is given.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import yaml

from usef.confidence import FEATURES, choose_threshold, fit, roc_auc
from usef.evaluate import evaluate_list, read_eval_list


def collect(model_dir: Path, lists: list[Path], out: Path, threads: int) -> list[dict]:
    """Per item: the features, ``target_present``, ``confused`` and ``si_sdr_imp``."""
    import torch

    import usef

    torch.set_num_threads(threads)
    extractor = usef.load_model(model_dir, device="cpu")
    rows: list[dict] = []
    for k, path in enumerate(lists):
        def extract_fn(mixture, reference, rate):
            estimate, feats = extractor.extract(mixture, reference, sample_rate=rate, return_features=True)
            return estimate, dict(zip(FEATURES, (float(v) for v in feats)))

        target = out / f"list{k}_{path.parent.name}"
        evaluate_list(read_eval_list(path), extract_fn, target, with_pesq=False, with_stoi=False,
                      write_estimates=False)
        with open(target / "metrics.csv", newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                if row["error"]:
                    continue
                present = int(row.get("target_present") or 1)
                rows.append({
                    "list": str(path), "id": row["id"], "target_present": present,
                    "confused": present and row.get("confused", "") in ("True", "1", "1.0"),
                    "si_sdr_imp": float(row["si_sdr_imp"]) if present else float("nan"),
                    **{name: float(row[name]) for name in FEATURES},
                })
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a model folder (config.yaml + weights)")
    parser.add_argument("--list", type=Path, nargs="+", required=True, help="usef eval list CSVs")
    parser.add_argument("--out", type=Path, required=True, help="folder for the per-item cues and the fit")
    parser.add_argument("--write", action="store_true", help="store the map in the model's config.yaml")
    parser.add_argument("--any-model", action="store_true", help="fit also a model without a trained level")
    parser.add_argument("--max-false-alarm", type=float, default=None,
                        help="store the threshold that accepts at most this share of the confused and "
                             "target-absent fitting items (default: the threshold maximising Youden's J)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    config_path = args.model / "config.yaml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    if config.get("output_level") != "calibrated" and not args.any_model:
        print(f"{args.model}: not trained with target-absent mixtures and a calibrated level "
              "(output_level); its cues mean little. --any-model fits it anyway", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    rows = collect(args.model, args.list, args.out, args.threads)
    labels = [int(r["target_present"] and not r["confused"]) for r in rows]
    feats = np.array([[r[name] for name in FEATURES] for r in rows])
    cmap = fit(feats, labels)
    scores = cmap(feats)
    threshold = choose_threshold(scores, labels, args.max_false_alarm)
    cmap = type(cmap)(cmap.weights, cmap.bias, threshold)
    accepted = scores >= threshold
    positive = np.asarray(labels, dtype=bool)
    present = [i for i, r in enumerate(rows) if r["target_present"]]
    report = {
        "model": str(args.model), "lists": [str(p) for p in args.list], "n": len(rows),
        "n_absent": len(rows) - len(present), "n_confused": int(sum(r["confused"] for r in rows)),
        "map": cmap.to_dict(),
        # on the fitting items themselves: optimistic, judge on another list with `usef eval --confidence`
        "fit_auc_all": roc_auc(scores, labels),
        "fit_auc_present_vs_absent": roc_auc(scores, [r["target_present"] for r in rows]),
        "fit_auc_correct_vs_confused": roc_auc(scores[present], [labels[i] for i in present]),
        "single_feature_auc": {name: roc_auc(feats[:, j], labels) for j, name in enumerate(FEATURES)},
        "threshold_rule": ("youden" if args.max_false_alarm is None
                           else f"false alarms <= {args.max_false_alarm:g} on the fitting items"),
        "fit_false_alarm_rate": float(accepted[~positive].mean()),
        "fit_miss_rate": float((~accepted[positive]).mean()),
    }
    (args.out / "fit.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    with open(args.out / "cues.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(json.dumps(report, indent=2))
    if args.write:
        config["confidence"] = cmap.to_dict()
        config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        print(f"wrote the map into {config_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
