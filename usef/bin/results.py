"""``python -m usef.bin.results SUMMARY.json --out RESULTS.md``: a Markdown table of a ``usef eval`` summary.

Used by the recipes' last stage.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

METRICS = ("si_sdr_imp", "sdr_imp", "si_sdr", "sdr", "pesq", "stoi")
EPILOG = """example:
  python -m usef.bin.results exp/x/eval_test/summary.json --out exp/x/RESULTS.md --title "Libri2Mix test"
"""


def _cell(value) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.2f}"


def results_markdown(summary: dict, title: str, model: str = "") -> str:
    """Markdown table (mean, 95 % CI, median, n per metric; failure and confusion rates)."""
    metrics = summary.get("metrics", {})
    lines = [f"# {title}", ""]
    if model:
        lines += [f"model: `{model}`", ""]
    lines += ["| metric | mean | 95 % CI | median | n |", "| --- | --- | --- | --- | --- |"]
    for name in METRICS:
        if name in metrics:
            m = metrics[name]
            lines.append(f"| {name} | {_cell(m['mean'])} | [{_cell(m['ci95_low'])}, {_cell(m['ci95_high'])}] "
                         f"| {_cell(m['median'])} | {m['n']} |")
    for name in ("failure_rate", "confusion_rate"):
        if summary.get(name) is not None:
            lines.append(f"| {name} | {_cell(100 * summary[name])} % | | | |")
    lines += ["", f"items: {summary.get('n_items')}, errors: {summary.get('n_failed_items')}", ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="usef results", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("summary", type=Path, help="summary.json written by usef eval")
    parser.add_argument("--out", type=Path, required=True, help="Markdown file to write")
    parser.add_argument("--title", default="Results")
    parser.add_argument("--model", default="", help="model name or directory to show")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = json.loads(args.summary.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        print(f"usef results: cannot read {args.summary}: {error}", file=sys.stderr)
        return 2
    text = results_markdown(summary, args.title, args.model)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
