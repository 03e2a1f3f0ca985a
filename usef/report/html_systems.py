"""The systems a listening report compares: ``usef eval`` folders loaded by
:func:`usef.report.compare.load_eval`, their display names, the check that they cover
the same items, their SI-SDRi summaries, and the item list giving each item's
mixture, reference and target audio."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from usef.evaluate import read_eval_list
from usef.metrics import summarize
from usef.report.compare import ItemMismatchError

PathLike = str | os.PathLike[str]

METRIC = "si_sdr_imp"


def _display_names(systems: Sequence[dict[str, Any]]) -> list[str]:
    """Model names; folder names when models repeat; numbered as a last resort."""
    for key in ("name", "folder"):
        names = [str(s[key]) for s in systems]
        if len(set(names)) == len(names):
            return names
    return [f"{s['folder']} ({k + 1})" for k, s in enumerate(systems)]


def _check_same_ids(systems: Sequence[dict[str, Any]], names: Sequence[str]) -> None:
    first = set(systems[0]["ids"])
    details: dict[str, list[str]] = {}
    parts = []
    for system, name in zip(systems[1:], names[1:]):
        ids = set(system["ids"])
        extra = [i for i in system["ids"] if i not in first]
        missing = [i for i in systems[0]["ids"] if i not in ids]
        for label, found in (("only in", extra), ("missing from", missing)):
            if found:
                details[f"{label} {name}"] = found
                shown = ", ".join(found[:5]) + (f", ... ({len(found) - 5} more)" if len(found) > 5 else "")
                parts.append(f"{len(found)} ids {label} {name} ({system['dir']}): {shown}")
    if parts:
        raise ItemMismatchError(
            f"the eval folders do not cover the same items as {names[0]} ({systems[0]['dir']}): "
            + "; ".join(parts),
            details,
        )


def _system_summary(system: dict[str, Any]) -> dict[str, Any]:
    rows = [system["rows"][i] for i in system["ids"]]
    values = [r.get(METRIC, math.nan) for r in rows if not r["error"]]
    values = [v for v in values if math.isfinite(v)]
    stats = summarize(values)
    flags = [r["confused"] for r in rows if r.get("confused") is not None and not r["error"]]
    return {
        "mean": stats["mean"], "ci95": (stats["ci95_low"], stats["ci95_high"]), "n": stats["n"],
        "n_items": len(rows), "n_failed_items": sum(bool(r["error"]) for r in rows),
        "failure_rate": (sum(v < 0.0 for v in values) / len(values)) if values else None,
        "confusion_rate": (sum(flags) / len(flags)) if flags else None,
        "values": values,
    }


def _source_items(
    systems: Sequence[dict[str, Any]], eval_list: PathLike | None
) -> tuple[dict[str, dict[str, str]] | None, str | None]:
    """Item dicts by id from ``eval_list`` or the list recorded in a summary.json."""
    if eval_list is not None:
        return {item["id"]: item for item in read_eval_list(eval_list)}, None
    for system in systems:
        summary_path = Path(system["dir"]) / "summary.json"
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        recorded = (summary.get("data") or {}).get("list") if isinstance(summary, dict) else None
        if not recorded:
            continue
        found = _recorded_list(str(recorded), summary_path.parent)
        if found is not None:
            return {item["id"]: item for item in read_eval_list(found)}, None
        return None, (f"the item list {recorded} recorded in {summary_path} was not found (neither as "
                      "given nor next to the summary); mixture, reference and target audio are omitted "
                      "(pass --list).")
    return None, ("no item list is recorded in the eval folders' summary.json; mixture, "
                  "reference and target audio are omitted (pass --list eval.csv).")


def _recorded_list(recorded: str, summary_dir: Path) -> Path | None:
    """The item list a summary.json names: an absolute path as is; a relative one first
    against the summary's folder (independent of where the report is built), then against
    the current folder (older ``usef eval`` recorded the path as typed where it ran)."""
    path = Path(recorded)
    candidates = [path] if path.is_absolute() else [summary_dir / path, path]
    return next((c for c in candidates if c.is_file()), None)
