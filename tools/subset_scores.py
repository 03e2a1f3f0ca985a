#!/usr/bin/env python
"""Per-subset SI-SDRi of ``usef eval`` folders (numbers for model cards, not tests).

Joins each folder's ``metrics.csv`` with the ``speakers.csv`` that ``tools/make_dev_set.py``
writes beside ``eval.csv`` and groups the target-present items by one of its columns
(``reference_source``: whether the reference comes from another recording of the talker, or
``target_speaker``). Prints, per subset and folder, the items, mean SI-SDRi with its 95 %
Student-t interval, failure rate (SI-SDRi < 0) and confusion rate; with two folders also the
paired difference (second minus first) with its interval and the share of items the second wins.

    python tools/subset_scores.py --speakers work_data/dev8k/speakers.csv \\
        work_data/eval_stage8 work_data/eval_stage11 --json docs/results/subsets_dev8k.json
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from usef.metrics import summarize


def read_rows(eval_dir: Path) -> dict[str, dict[str, str]]:
    """``metrics.csv`` rows of the target-present items that were scored, keyed by id."""
    with open(eval_dir / "metrics.csv", newline="", encoding="utf-8") as handle:
        rows = {row["id"]: row for row in csv.DictReader(handle)}
    return {key: row for key, row in rows.items()
            if row.get("si_sdr_imp") not in (None, "") and not row.get("error")
            and math.isfinite(float(row["si_sdr_imp"]))}


def subset_table(speakers_csv: Path, eval_dirs: list[Path], column: str) -> dict[str, dict]:
    """Per value of ``column``: each folder's summary and, for two folders, their paired difference."""
    with open(speakers_csv, newline="", encoding="utf-8") as handle:
        groups = {row["id"]: row[column] for row in csv.DictReader(handle)}
    runs = [read_rows(d) for d in eval_dirs]
    ids_by_group: dict[str, list[str]] = defaultdict(list)
    shared = set(groups).intersection(*runs)
    for item in sorted(shared):
        ids_by_group[groups[item]].append(item)
    table = {}
    for group, ids in sorted(ids_by_group.items()):
        entry = {"n": len(ids), "folders": {}}
        for eval_dir, rows in zip(eval_dirs, runs):
            values = [float(rows[i]["si_sdr_imp"]) for i in ids]
            entry["folders"][str(eval_dir)] = {
                **{k: summarize(values)[k] for k in ("mean", "ci95_low", "ci95_high")},
                "failure_rate": sum(v < 0 for v in values) / len(values),
                "confusion_rate": sum(rows[i].get("confused") == "True" for i in ids) / len(ids),
            }
        if len(runs) == 2:
            first, second = runs
            deltas = [float(second[i]["si_sdr_imp"]) - float(first[i]["si_sdr_imp"]) for i in ids]
            paired = summarize(deltas)
            entry["paired"] = {"mean_delta": paired["mean"], "ci95_low": paired["ci95_low"],
                               "ci95_high": paired["ci95_high"],
                               "second_wins": sum(d > 0 for d in deltas) / len(deltas)}
        table[group] = entry
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("eval_dirs", nargs="+", type=Path, help="usef eval output folders (metrics.csv)")
    parser.add_argument("--speakers", type=Path, required=True, help="speakers.csv of the dev set")
    parser.add_argument("--by", default="reference_source", help="column of speakers.csv to group by")
    parser.add_argument("--json", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    try:
        table = subset_table(args.speakers, args.eval_dirs, args.by)
    except (OSError, KeyError, ValueError) as exc:
        print(f"subset_scores: error: {exc}", file=sys.stderr)
        return 1
    for group, entry in table.items():
        print(f"{args.by} = {group}: {entry['n']} items")
        for name, s in entry["folders"].items():
            print(f"  {name}: {s['mean']:.2f} [{s['ci95_low']:.2f}, {s['ci95_high']:.2f}] dB, "
                  f"failures {100 * s['failure_rate']:.1f} %, confusions {100 * s['confusion_rate']:.1f} %")
        if "paired" in entry:
            p = entry["paired"]
            print(f"  second - first: {p['mean_delta']:+.2f} [{p['ci95_low']:+.2f}, {p['ci95_high']:+.2f}] dB, "
                  f"second better on {100 * p['second_wins']:.0f} %")
    if args.json:
        args.json.write_text(json.dumps({"by": args.by, "speakers": str(args.speakers), "subsets": table},
                                        indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
