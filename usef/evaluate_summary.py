"""The ``summary.json`` of ``usef eval``: statistics over the rows of ``metrics.csv``.

Mean / median / 95 % CI per metric, failure and confusion rates, the output level
(error against the target, clipping), target-absent items and, when the rows carry a
``confidence`` column, how well it ranks outputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from usef.metrics import summarize

__all__ = ["ABSENT_SILENT_DB", "DROP_SHARE", "HEADROOM_PEAK", "METRIC_COLUMNS", "confidence_summary"]

# the metric columns of metrics.csv, in order; each one is summarized
METRIC_COLUMNS = (
    "input_si_sdr",
    "si_sdr",
    "si_sdr_imp",
    "sdr",
    "sdr_imp",
    "pesq",
    "stoi",
    "level_db",
)
# a mixture within this peak must give an estimate within full scale
HEADROOM_PEAK = 0.9
# a target-absent output at least this far below its mixture counts as silent
ABSENT_SILENT_DB = -15.0
# the confidence report: the items kept when the least confident 10 % are dropped
DROP_SHARE = 0.10


def _summarize_rows(
    rows: Sequence[Mapping[str, Any]], has_interferer: bool
) -> dict[str, Any]:
    done = [row for row in rows if not row["error"]]
    ok = [row for row in done if row.get("target_present", 1)]  # items with a target to score
    names = list(METRIC_COLUMNS) + (["si_sdr_interferer"] if has_interferer else [])
    metrics = {
        name: summarize([row[name] for row in ok if name in row]) for name in names
    }
    imps = [row["si_sdr_imp"] for row in ok if math.isfinite(row["si_sdr_imp"])]
    summary: dict[str, Any] = {
        "n_items": len(rows),
        "n_failed_items": len(rows) - len(done),
        "metrics": metrics,
        # share of evaluated items the extractor made worse than the mixture
        "failure_rate": (sum(v < 0.0 for v in imps) / len(imps))
        if imps
        else float("nan"),
    }
    summary["level"] = _level_summary(ok)
    if has_interferer:
        flags = [bool(row["confused"]) for row in ok if "confused" in row]
        summary["confusion_rate"] = (sum(flags) / len(flags)) if flags else float("nan")
        summary["n_confusion_items"] = len(flags)
    absent = [row for row in done if not row.get("target_present", 1)]
    if absent:
        summary["target_absent"] = _absent_summary(absent, ok)
    if any("confidence" in row for row in done):
        summary["confidence"] = confidence_summary(done)
    return summary


def _absent_summary(absent: Sequence[Mapping[str, Any]], present: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Output energy relative to the mixture: target-absent items (silence is right) beside
    target-present ones."""
    def values(rows):
        v = np.asarray([row.get("output_to_mixture_db", np.nan) for row in rows], dtype=np.float64)
        return v[np.isfinite(v)]

    out, ref = values(absent), values(present)
    nan = float("nan")
    return {
        "n": len(absent),
        "output_to_mixture_db_median": float(np.median(out)) if out.size else nan,
        f"share_below_{-ABSENT_SILENT_DB:g}db": float(np.mean(out <= ABSENT_SILENT_DB)) if out.size else nan,
        "present_output_to_mixture_db_median": float(np.median(ref)) if ref.size else nan,
    }


def confidence_summary(rows: Sequence[Mapping[str, Any]], threshold: float | None = None) -> dict[str, Any]:
    """How well the ``confidence`` column ranks outputs (ROC AUC, :func:`usef.confidence.roc_auc`):
    target-present against target-absent items, and among present items correct against
    confused ones; at ``threshold`` (default: the ``confidence_threshold`` column, else 0.5) the
    false-alarm rate (absent items accepted) and the miss rate; and the SI-SDRi of the present
    items kept when the least confident ``DROP_SHARE`` of them are dropped."""
    from usef.confidence import roc_auc  # NumPy only

    scored = [row for row in rows if math.isfinite(float(row.get("confidence", float("nan"))))]
    if threshold is None:
        given = [float(row["confidence_threshold"]) for row in scored if "confidence_threshold" in row]
        threshold = given[0] if given else 0.5
    present = [row for row in scored if row.get("target_present", 1)]
    absent = [row for row in scored if not row.get("target_present", 1)]
    judged = [row for row in present if "confused" in row and math.isfinite(float(row["confused"]))]
    nan = float("nan")
    out: dict[str, Any] = {"n": len(scored), "threshold": float(threshold)}
    out["auc_present_vs_absent"] = roc_auc([r["confidence"] for r in present + absent],
                                           [1] * len(present) + [0] * len(absent))
    out["auc_correct_vs_confused"] = roc_auc([r["confidence"] for r in judged],
                                             [int(not r["confused"]) for r in judged])
    out["false_alarm_rate"] = (sum(r["confidence"] >= threshold for r in absent) / len(absent)) if absent else nan
    out["miss_rate"] = (sum(r["confidence"] < threshold for r in present) / len(present)) if present else nan
    imps = [(r["confidence"], r["si_sdr_imp"]) for r in present if math.isfinite(r.get("si_sdr_imp", nan))]
    if imps:
        imps.sort(key=lambda pair: pair[0])
        kept = imps[round(DROP_SHARE * len(imps)):]
        out["si_sdr_imp_all"] = float(np.mean([v for _, v in imps]))
        out[f"si_sdr_imp_kept_drop{int(DROP_SHARE * 100)}"] = float(np.mean([v for _, v in kept]))
    return out


def _level_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """How loud the estimates are against their targets, and whether any exceeds full scale
    although its mixture left headroom (``mixture_peak`` <= 0.9)."""
    levels = np.asarray([row["level_db"] for row in rows if "level_db" in row], dtype=np.float64)
    levels = levels[np.isfinite(levels)]
    headroom = [row for row in rows if "peak" in row and row["mixture_peak"] <= HEADROOM_PEAK]
    nan = float("nan")
    return {
        "n": int(levels.size),
        "median_db": float(np.median(levels)) if levels.size else nan,
        "abs_p95_db": float(np.percentile(np.abs(levels), 95)) if levels.size else nan,
        "share_within_4db": float(np.mean(np.abs(levels) <= 4.0)) if levels.size else nan,
        "n_headroom_items": len(headroom),
        "n_over_full_scale": sum(row["peak"] > 1.0 for row in headroom),
    }
