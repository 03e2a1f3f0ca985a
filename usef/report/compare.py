"""Paired comparison of two ``usef eval`` output folders.

Both systems were scored on the same items, so the per-item difference
``delta = A - B`` removes the (large) item-to-item variation that two independent
confidence intervals would keep: a 0.3 dB gain can be clearly significant while
the two systems' own CIs overlap. This module reports the mean delta with a
seeded percentile-bootstrap CI, the Wilcoxon signed-rank p-value, the win rate
and each system's mean, failure rate (SI-SDRi < 0 dB) and confusion rate.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "ItemMismatchError",
    "format_table",
    "load_eval",
    "paired_compare",
    "wilcoxon_signed_rank",
]

# columns of metrics.csv that are not numeric metrics
_TEXT_COLUMNS = ("id", "error", "mixture", "model")  # model: which model served the item (usef eval)
_BOOL_COLUMNS = ("confused",)
# how many ids an error message lists per category
_ID_SAMPLE = 5
# bound on bootstrap index-matrix elements held at once (int64: 8 bytes each)
_BOOTSTRAP_CHUNK_ELEMENTS = 4_000_000

PathLike = str | os.PathLike[str]


class ItemMismatchError(ValueError):
    """The two evaluations do not cover the same successfully scored items."""

    def __init__(self, message: str, details: Mapping[str, list[str]]) -> None:
        super().__init__(message)
        self.details = dict(details)


def _parse_cell(value: str | None, column: str, where: str) -> Any:
    text = (value or "").strip()
    if column in _BOOL_COLUMNS:
        lowered = text.lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
        if lowered in ("", "nan", "none"):
            return None
        raise ValueError(f"{where}: column {column!r} holds {text!r}, expected True or False")
    if not text:
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{where}: column {column!r} holds {text!r}, expected a number") from None


def load_eval(directory: PathLike) -> dict[str, Any]:
    """Read the ``metrics.csv`` and ``summary.json`` of one ``usef eval`` folder.

    Returns a dict with ``dir`` (str), ``name`` (``model.name`` from summary.json,
    else the folder name), ``folder`` (the folder name), ``model`` (summary.json's
    model dict or None), ``columns`` (metrics.csv header), ``ids`` (in file order)
    and ``rows`` (id -> {column: float | bool | None, "error": str}).
    Raises FileNotFoundError when metrics.csv is missing and ValueError for a
    malformed file (no id column, duplicate ids, non-numeric metric cells).
    """
    path = Path(directory)
    if not path.is_dir():
        raise FileNotFoundError(f"eval folder {str(path)!r} does not exist or is not a folder")
    metrics_path = path / "metrics.csv"
    if not metrics_path.is_file():
        raise FileNotFoundError(
            f"eval folder {str(path)!r} has no metrics.csv; is it an output folder of 'usef eval'?"
        )
    with open(metrics_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        if "id" not in columns:
            raise ValueError(f"{metrics_path}: no 'id' column (found: {', '.join(columns) or 'none'})")
        ids: list[str] = []
        rows: dict[str, dict[str, Any]] = {}
        for line, raw in enumerate(reader, start=2):
            raw = {(k or "").strip(): v for k, v in raw.items()}
            item_id = (raw.get("id") or "").strip()
            where = f"{metrics_path}, line {line}"
            if not item_id:
                raise ValueError(f"{where}: empty id")
            if item_id in rows:
                raise ValueError(f"{where}: duplicate id {item_id!r}")
            row: dict[str, Any] = {"error": (raw.get("error") or "").strip()}
            for column in columns:
                if column not in _TEXT_COLUMNS:
                    row[column] = _parse_cell(raw.get(column), column, where)
                elif column == "model":
                    row[column] = (raw.get(column) or "").strip()
            ids.append(item_id)
            rows[item_id] = row

    model: dict[str, Any] | None = None
    summary_path = path / "summary.json"
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{summary_path}: not valid JSON ({exc})") from None
        if isinstance(summary, dict) and isinstance(summary.get("model"), dict):
            model = summary["model"]
    else:
        logger.warning("%s has no summary.json; naming the system after its folder", path)
    folder = path.resolve().name or str(path)
    name = str(model["name"]) if model and model.get("name") else folder
    return {
        "dir": str(path),
        "name": name,
        "folder": folder,
        "model": model,
        "columns": columns,
        "ids": ids,
        "rows": rows,
    }


def wilcoxon_signed_rank(deltas: Sequence[float] | np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value by the normal approximation.

    Zero differences are dropped (Wilcoxon's convention, scipy's default), tied
    absolute values share their average rank and the variance is corrected for
    ties; no continuity correction. Matches ``scipy.stats.wilcoxon(d,
    method="approx")``. Returns 1.0 when every difference is zero.
    """
    d = np.asarray(deltas, dtype=np.float64).ravel()
    if d.size == 0 or not np.all(np.isfinite(d)):
        raise ValueError("deltas must be a non-empty sequence of finite numbers")
    d = d[d != 0.0]
    n = d.size
    if n == 0:
        return 1.0
    magnitude = np.abs(d)
    order = np.argsort(magnitude, kind="mergesort")
    sorted_mag = magnitude[order]
    # average rank per run of tied magnitudes
    starts = np.flatnonzero(np.r_[True, sorted_mag[1:] != sorted_mag[:-1]])
    counts = np.diff(np.r_[starts, n])
    run_ranks = starts + (counts + 1) / 2.0
    ranks = np.empty(n)
    ranks[order] = np.repeat(run_ranks, counts)
    r_plus = float(ranks[d > 0].sum())
    mean = n * (n + 1) / 4.0
    var = n * (n + 1) * (2 * n + 1) / 24.0 - float(np.sum(counts**3 - counts)) / 48.0
    if var <= 0.0:
        return 1.0
    z = (r_plus - mean) / math.sqrt(var)
    return float(math.erfc(abs(z) / math.sqrt(2.0)))


def _wilcoxon_p(deltas: np.ndarray) -> tuple[float, str]:
    if not np.any(deltas != 0.0):
        # no signed differences at all: nothing to test, and scipy warns here
        return 1.0, "all differences zero"
    try:
        from scipy.stats import wilcoxon
    except ImportError:
        return wilcoxon_signed_rank(deltas), "normal approximation"
    return float(wilcoxon(deltas).pvalue), "scipy.stats.wilcoxon"


def _bootstrap_ci(
    values: np.ndarray, n_bootstrap: int, seed: int, level: float = 0.95
) -> tuple[float, float]:
    """Percentile-bootstrap CI of the mean; resamples in chunks to bound memory."""
    rng = np.random.default_rng(seed)
    n = values.size
    rows_per_chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // n)
    means = np.empty(n_bootstrap)
    for start in range(0, n_bootstrap, rows_per_chunk):
        stop = min(n_bootstrap, start + rows_per_chunk)
        index = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = values[index].mean(axis=1)
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def _display_names(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[str, str]:
    """Model names, unless both runs used the same architecture: then folder names."""
    if a["name"] != b["name"]:
        return str(a["name"]), str(b["name"])
    if a["folder"] != b["folder"]:
        return str(a["folder"]), str(b["folder"])
    return str(a["dir"]), str(b["dir"])


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _rates(system: Mapping[str, Any], ids: Sequence[str]) -> tuple[float | None, float | None]:
    rows = system["rows"]
    failure = None
    if "si_sdr_imp" in system["columns"]:
        imps = [rows[i]["si_sdr_imp"] for i in ids if math.isfinite(rows[i]["si_sdr_imp"])]
        if imps:
            failure = sum(v < 0.0 for v in imps) / len(imps)
    confusion = None
    if "confused" in system["columns"]:
        flags = [rows[i]["confused"] for i in ids if rows[i]["confused"] is not None]
        if flags:
            confusion = sum(flags) / len(flags)
    return failure, confusion


def _id_list(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:_ID_SAMPLE])
    return shown + (f", ... ({len(ids) - _ID_SAMPLE} more)" if len(ids) > _ID_SAMPLE else "")


def paired_compare(
    a: Mapping[str, Any] | PathLike,
    b: Mapping[str, Any] | PathLike,
    metric: str = "si_sdr_imp",
    seed: int = 0,
    n_bootstrap: int = 10000,
    intersect: bool = False,
) -> dict[str, Any]:
    """Compare system A with system B item by item on ``metric``.

    Args:
        a, b: dicts from :func:`load_eval`, or eval folders to load.
        metric: a numeric column present in both metrics.csv files.
        seed: seeds the bootstrap (``numpy.random.default_rng(seed)``).
        n_bootstrap: bootstrap resamples for the 95 % CI of the mean delta.
        intersect: compare the items scored in both and report how many were
            dropped, instead of raising on mismatched item sets.

    Items are paired by id. An item counts as scored when its ``error`` is empty
    and ``metric`` is finite; items unscored in both systems are left out and
    counted. Raises ItemMismatchError (a ValueError) when an id is in one folder
    only or scored in one system only and ``intersect`` is False; ValueError
    for a bad argument or when no item is scored in both.

    Returns a JSON-serialisable dict: ``metric, n, mean_delta, median_delta,
    ci95 [low, high], p_value, p_value_method, win_rate, a, b`` (each with
    ``name, dir, mean, failure_rate, confusion_rate``), ``seed, n_bootstrap,
    intersect, n_dropped, dropped`` (counts per reason) and ``dropped_ids``.
    """
    a = load_eval(a) if isinstance(a, (str, os.PathLike)) else a
    b = load_eval(b) if isinstance(b, (str, os.PathLike)) else b
    if not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be a positive integer, got {n_bootstrap!r}")
    if not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    for label, system in (("A", a), ("B", b)):
        numeric = [c for c in system["columns"] if c not in _TEXT_COLUMNS + _BOOL_COLUMNS]
        if metric not in numeric:
            raise ValueError(
                f"metric {metric!r} is not a column of {label}'s metrics.csv ({system['dir']}); "
                f"available: {', '.join(numeric) or 'none'}"
            )

    rows_a, rows_b = a["rows"], b["rows"]

    def scored(row: Mapping[str, Any]) -> bool:
        return not row["error"] and math.isfinite(row[metric])

    only_a = [i for i in a["ids"] if i not in rows_b]
    only_b = [i for i in b["ids"] if i not in rows_a]
    common = [i for i in a["ids"] if i in rows_b]
    failed_a = [i for i in common if not scored(rows_a[i]) and scored(rows_b[i])]
    failed_b = [i for i in common if scored(rows_a[i]) and not scored(rows_b[i])]
    failed_both = [i for i in common if not scored(rows_a[i]) and not scored(rows_b[i])]
    paired = [i for i in common if scored(rows_a[i]) and scored(rows_b[i])]
    name_a, name_b = _display_names(a, b)
    mismatch = {
        "only_in_a": only_a,
        "only_in_b": only_b,
        "failed_in_a_only": failed_a,
        "failed_in_b_only": failed_b,
    }
    if any(mismatch.values()) and not intersect:
        parts = [
            f"{len(ids)} {label}: {_id_list(ids)}"
            for label, ids in (
                (f"ids only in A ({name_a})", only_a),
                (f"ids only in B ({name_b})", only_b),
                ("items failed in A only", failed_a),
                ("items failed in B only", failed_b),
            )
            if ids
        ]
        raise ItemMismatchError(
            "the two evaluations do not cover the same items: " + "; ".join(parts)
            + f". Pass intersect=True (--intersect) to compare the {len(paired)} items "
            "scored in both.",
            mismatch,
        )
    if not paired:
        raise ValueError(
            f"no item has a finite {metric!r} in both {a['dir']} and {b['dir']} "
            f"({len(common)} ids in common)"
        )
    if failed_both:
        logger.info("%d items failed in both systems and are left out", len(failed_both))

    x = np.array([rows_a[i][metric] for i in paired], dtype=np.float64)
    y = np.array([rows_b[i][metric] for i in paired], dtype=np.float64)
    delta = x - y
    low, high = _bootstrap_ci(delta, int(n_bootstrap), int(seed))
    p_value, method = _wilcoxon_p(delta)
    win_rate = (float(np.sum(delta > 0)) + 0.5 * float(np.sum(delta == 0))) / delta.size

    systems = {}
    for key, system, values, name in (("a", a, x, name_a), ("b", b, y, name_b)):
        failure, confusion = _rates(system, paired)
        systems[key] = {
            "name": name,
            "dir": system["dir"],
            "model": system["model"],
            "mean": float(values.mean()),
            "failure_rate": failure,
            "confusion_rate": confusion,
        }
    dropped = {**mismatch, "failed_in_both": failed_both}
    return {
        "metric": metric,
        "n": int(delta.size),
        "mean_delta": float(delta.mean()),
        "median_delta": float(np.median(delta)),
        "ci95": [low, high],
        "p_value": _finite_or_none(p_value),
        "p_value_method": method,
        "win_rate": win_rate,
        "a": systems["a"],
        "b": systems["b"],
        "seed": int(seed),
        "n_bootstrap": int(n_bootstrap),
        "intersect": bool(intersect),
        "n_dropped": sum(len(ids) for ids in dropped.values()),
        "dropped": {reason: len(ids) for reason, ids in dropped.items()},
        "dropped_ids": {reason: ids[:_ID_SAMPLE] for reason, ids in dropped.items() if ids},
    }


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100.0 * value:.1f}"


def format_table(result: Mapping[str, Any]) -> str:
    """Render a :func:`paired_compare` result as a small plain-text table."""
    a, b = result["a"], result["b"]
    width = max(len("delta A-B"), len(a["name"]) + 3, len(b["name"]) + 3)
    lines = [
        f"{result['metric']}: {result['n']} paired items"
        + (f" ({result['n_dropped']} dropped)" if result["n_dropped"] else ""),
        f"{'system':<{width}}  {'mean':>8}  {'fail %':>6}  {'conf %':>6}",
    ]
    for label, system in (("A", a), ("B", b)):
        lines.append(
            f"{label + '  ' + system['name']:<{width}}  {system['mean']:>8.3f}  "
            f"{_percent(system['failure_rate']):>6}  {_percent(system['confusion_rate']):>6}"
        )
    low, high = result["ci95"]
    p_value = result["p_value"]
    p_text = "-" if p_value is None else f"{p_value:.3g}"
    lines.append(
        f"{'delta A-B':<{width}}  {result['mean_delta']:>+8.3f}  "
        f"95% CI [{low:+.3f}, {high:+.3f}]  Wilcoxon p = {p_text}  "
        f"A wins {100.0 * result['win_rate']:.1f}%"
    )
    return "\n".join(lines) + "\n"
