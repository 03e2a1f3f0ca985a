#!/usr/bin/env python
"""Per-subset paired comparison of two ``usef eval`` folders (numbers for model cards, not tests).

Joins the folders' ``metrics.csv`` with the ``speakers.csv`` that ``tools/make_dev_set.py``
writes beside ``eval.csv`` and splits the items scored in both by one of its columns
(``reference_source``: whether the reference comes from another recording of the talker, or
``target_speaker``). Each subset goes through ``usef compare``'s own statistics
(:func:`usef.report.paired_compare`: bootstrap CI of the mean difference, Wilcoxon p, win rate,
failure and confusion rates), reported as second minus first, plus each folder's mean SI-SDRi
with its 95 % Student-t interval.

    python tools/subset_scores.py --speakers work_data/dev8k/speakers.csv \\
        work_data/eval_stage8 work_data/eval_stage11 --json docs/results/subsets_dev8k.json
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from usef.metrics import summarize
from usef.report import load_eval, paired_compare

METRIC = "si_sdr_imp"


def _subset(system: dict, ids: list[str]) -> dict:
    return {**system, "ids": ids, "rows": {i: system["rows"][i] for i in ids}}


def subset_table(speakers_csv: Path, first_dir: Path, second_dir: Path, column: str) -> dict[str, dict]:
    """Per value of ``column``: the paired comparison (second minus first) and each folder's mean."""
    with open(speakers_csv, newline="", encoding="utf-8") as handle:
        groups = {row["id"]: row[column] for row in csv.DictReader(handle)}
    first, second = load_eval(first_dir), load_eval(second_dir)

    def scored(system: dict, item: str) -> bool:
        row = system["rows"].get(item)
        return row is not None and not row["error"] and math.isfinite(row[METRIC])

    table = {}
    for group in sorted(set(groups.values())):
        ids = [i for i in first["ids"] if groups.get(i) == group and scored(first, i) and scored(second, i)]
        if not ids:  # e.g. only target-absent items
            continue
        result = paired_compare(_subset(second, ids), _subset(first, ids), metric=METRIC)
        folders = {}
        for system, side in ((first, result["b"]), (second, result["a"])):
            interval = summarize([system["rows"][i][METRIC] for i in ids])
            folders[system["dir"]] = {"mean": side["mean"], "ci95_low": interval["ci95_low"],
                                      "ci95_high": interval["ci95_high"], "failure_rate": side["failure_rate"],
                                      "confusion_rate": side["confusion_rate"]}
        table[group] = {"n": len(ids), "folders": folders,
                        "paired": {"mean_delta": result["mean_delta"], "ci95_low": result["ci95"][0],
                                   "ci95_high": result["ci95"][1], "p_value": result["p_value"],
                                   "second_wins": result["win_rate"]}}
    return table


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.1f} %"  # None: the folder has no such column


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path, help="usef eval output folder (metrics.csv)")
    parser.add_argument("second", type=Path, help="the folder compared with it (differences are second - first)")
    parser.add_argument("--speakers", type=Path, required=True, help="speakers.csv of the dev set")
    parser.add_argument("--by", default="reference_source", help="column of speakers.csv to group by")
    parser.add_argument("--json", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    try:
        table = subset_table(args.speakers, args.first, args.second, args.by)
    except (OSError, KeyError, ValueError) as exc:
        print(f"subset_scores: error: {exc}", file=sys.stderr)
        return 1
    for group, entry in table.items():
        print(f"{args.by} = {group}: {entry['n']} items")
        for name, s in entry["folders"].items():
            print(f"  {name}: {s['mean']:.2f} [{s['ci95_low']:.2f}, {s['ci95_high']:.2f}] dB, "
                  f"failures {_percent(s['failure_rate'])}, confusions {_percent(s['confusion_rate'])}")
        p = entry["paired"]
        print(f"  second - first: {p['mean_delta']:+.2f} [{p['ci95_low']:+.2f}, {p['ci95_high']:+.2f}] dB, "
              f"second better on {100 * p['second_wins']:.0f} %")
    if args.json:
        args.json.write_text(json.dumps({"by": args.by, "speakers": str(args.speakers), "subsets": table},
                                        indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
