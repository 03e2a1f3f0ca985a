"""``usef results SUMMARY.json --out RESULTS.md``: a Markdown table of a ``usef eval`` summary.

Used by the recipes' last stage. Exit codes: 0 written, 2 unreadable summary or unwritable output.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from usef.bin import HelpFormatter, UsageError, run_command

METRICS = ("si_sdr_imp", "sdr_imp", "si_sdr", "sdr", "pesq", "stoi")
DESCRIPTION = """\
Write a Markdown table (mean, 95 % CI, median, n per metric; failure and confusion
rates) of the summary.json that usef eval writes. Used by the recipes' last stage.
"""
EPILOG = """example:
  usef results exp/x/eval_test/summary.json --out exp/x/RESULTS.md --title "Libri2Mix test"
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
    parser = argparse.ArgumentParser(prog="usef results", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=HelpFormatter)
    parser.add_argument("summary", type=Path, help="summary.json written by usef eval")
    parser.add_argument("--out", type=Path, required=True, help="Markdown file to write")
    parser.add_argument("--title", default="Results", help="heading of the table")
    parser.add_argument("--model", default=None, help="model name or directory to show")
    return parser


def _results(args: argparse.Namespace) -> int:
    try:
        summary = json.loads(args.summary.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read {args.summary}: {error}") from error
    if not isinstance(summary, dict) or not isinstance(summary.get("metrics", {}), dict):
        raise UsageError(f"{args.summary}: not a summary.json of usef eval")
    if args.out.is_dir():
        raise UsageError(f"--out {args.out} is a folder; give a file name such as {args.out / 'RESULTS.md'}")
    text = results_markdown(summary, args.title, args.model or "")
    try:
        args.out.write_text(text, encoding="utf-8")
    except OSError as error:
        raise UsageError(f"cannot write {args.out}: {error}") from error
    print(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``usef results``; returns the exit code."""
    return run_command(build_parser(), argv, _results)


if __name__ == "__main__":
    sys.exit(main())
