"""Statistics of the similarity study: quantile bins, seeded bootstrap intervals of a mean
and of a slope, and the per-bin table of each model and each paired difference."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["BIN_COLUMNS", "bootstrap_mean", "quantile_bins", "similarity_table", "slope_bootstrap"]

BIN_COLUMNS = (
    "bin", "similarity_low", "similarity_high", "similarity_centre", "series", "kind", "n",
    "mean", "ci95_low", "ci95_high", "failure_rate", "confusion_rate",
)


def quantile_bins(values: Sequence[float], n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``values`` into ``n_bins`` bins of (nearly) equal counts at their quantiles.

    Bin ``k`` holds ``edges[k] <= v < edges[k + 1]`` (the last bin includes its upper
    edge). Repeated quantiles (many equal values) merge into one edge, so fewer bins
    may come back than asked. Non-finite values get bin ``-1``.

    Shape:
        values ``(N,)`` -> bin index ``(N,)`` int64, edges ``(K + 1,)`` with ``K <= n_bins``.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins: must be a positive integer, got {n_bins!r}")
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    if not finite.any():
        raise ValueError("values: no finite similarity to bin")
    edges = np.unique(np.quantile(v[finite], np.linspace(0.0, 1.0, n_bins + 1)))
    if edges.size == 1:  # every value equal: one bin
        edges = np.repeat(edges, 2)
    index = np.full(v.shape, -1, dtype=np.int64)
    index[finite] = np.searchsorted(edges[1:-1], v[finite], side="right")
    return index, edges


def bootstrap_mean(
    values: Sequence[float], seed: int | Sequence[int] = 0, n_boot: int = 2000, level: float = 0.95
) -> dict[str, float]:
    """Mean and percentile-bootstrap interval of the mean of the finite ``values``.

    ``n_boot`` resamples with replacement from ``np.random.default_rng(seed)``, so the
    interval is reproducible. Fewer than two values give a NaN interval.

    Shape:
        values ``(N,)`` -> ``{"n", "mean", "ci95_low", "ci95_high"}``.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot: must be >= 1, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level: must be in (0, 1), got {level}")
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    n = int(arr.size)
    if n == 0:
        return {"n": 0, "mean": math.nan, "ci95_low": math.nan, "ci95_high": math.nan}
    mean = float(arr.mean())
    if n < 2:
        return {"n": n, "mean": mean, "ci95_low": math.nan, "ci95_high": math.nan}
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    low, high = np.quantile(means, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return {"n": n, "mean": mean, "ci95_low": float(low), "ci95_high": float(high)}


def slope_bootstrap(
    x: Sequence[float], y: Sequence[float], seed: int | Sequence[int] = 0, n_boot: int = 2000,
    level: float = 0.95,
) -> dict[str, float]:
    """Least-squares slope of ``y`` on ``x`` with a pairs-bootstrap interval.

    Pairs where either value is non-finite are left out; resamples where all ``x``
    are equal (no slope) are dropped.

    Shape:
        x ``(N,)``, y ``(N,)`` -> ``{"n", "slope", "ci95_low", "ci95_high"}``.
    """
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.shape != ya.shape:
        raise ValueError(f"x and y: shapes differ, {xa.shape} and {ya.shape}")
    keep = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[keep], ya[keep]
    n = int(xa.size)
    nan = {"n": n, "slope": math.nan, "ci95_low": math.nan, "ci95_high": math.nan}
    if n < 2 or np.ptp(xa) == 0:
        return nan

    def slopes(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:  # (B, N) -> (B,)
        dx = xs - xs.mean(axis=-1, keepdims=True)
        dy = ys - ys.mean(axis=-1, keepdims=True)
        sxx = (dx * dx).sum(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (dx * dy).sum(axis=-1) / sxx

    slope = float(slopes(xa[None], ya[None])[0])
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, n, size=(n_boot, n))
    boot = slopes(xa[pick], ya[pick])
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return {**nan, "slope": slope}
    low, high = np.quantile(boot, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return {"n": n, "slope": slope, "ci95_low": float(low), "ci95_high": float(high)}


def _rate(flags: np.ndarray) -> float:
    return float(flags.mean()) if flags.size else math.nan


def similarity_table(
    similarity: Sequence[float],
    si_sdr_imp: Mapping[str, Sequence[float]],
    confused: Mapping[str, Sequence[bool | None]] | None = None,
    n_bins: int = 4,
    seed: int = 0,
    n_boot: int = 2000,
) -> dict[str, Any]:
    """Per-bin statistics of each model and of each paired difference (first model − other).

    Args:
        similarity: one value per item (NaN: unknown; such items count only in ``all``).
        si_sdr_imp: model name -> SI-SDRi per item, aligned with ``similarity`` (NaN
            for an item the model failed on).
        confused: model name -> confusion flag per item (None: unknown), optional.
        n_bins: number of quantile bins (see :func:`quantile_bins`).
        seed: the bootstrap of bin ``k`` and series ``s`` uses ``(seed, k, s)``, so a
            bin's interval does not change when another bin or model is added.
        n_boot: bootstrap resamples.

    Returns:
        ``{"edges": [...], "bin": [bin index per item, -1 unknown], "rows": [...],
        "trend": [...]}``; ``rows`` hold :data:`BIN_COLUMNS` for bins ``0..K-1`` then
        ``"all"``, each with one row per model (``kind="model"``) and one per pair
        (``kind="difference"``, series ``"A - B"``, mean and CI of the per-item
        difference over items both models scored). ``trend``: per pair, the slope of
        the per-item difference against similarity (:func:`slope_bootstrap`).

    Shape:
        similarity ``(N,)``, each si_sdr_imp / confused ``(N,)``.
    """
    sim = np.asarray(similarity, dtype=np.float64)
    if not si_sdr_imp:
        raise ValueError("si_sdr_imp: give at least one model")
    models = list(si_sdr_imp)
    scores = {m: np.asarray(si_sdr_imp[m], dtype=np.float64) for m in models}
    flags: dict[str, np.ndarray] = {}
    for m in models:
        if scores[m].shape != sim.shape:
            raise ValueError(f"si_sdr_imp[{m!r}]: {scores[m].shape[0]} items, similarity has {sim.shape[0]}")
        # NaN marks an unknown flag so that it drops out of the rate
        raw = (confused or {}).get(m)
        flags[m] = (np.full(sim.shape, np.nan) if raw is None
                    else np.array([np.nan if f is None else float(bool(f)) for f in raw]))
        if flags[m].shape != sim.shape:
            raise ValueError(f"confused[{m!r}]: {flags[m].shape[0]} items, similarity has {sim.shape[0]}")
    index, edges = quantile_bins(sim, n_bins)
    pairs = [(models[0], other) for other in models[1:]]

    rows: list[dict[str, Any]] = []
    groups = [(k, index == k) for k in range(len(edges) - 1)] + [("all", np.ones(sim.shape, dtype=bool))]
    for k, member in groups:
        known = sim[member & np.isfinite(sim)]
        span = {
            "bin": k,
            "similarity_low": float(known.min()) if known.size else math.nan,
            "similarity_high": float(known.max()) if known.size else math.nan,
            "similarity_centre": float(np.median(known)) if known.size else math.nan,
        }
        bin_seed = -1 if k == "all" else int(k)
        for s, m in enumerate(models):
            values = scores[m][member]
            ok = values[np.isfinite(values)]
            stats = bootstrap_mean(ok, seed=[seed, bin_seed + 1, s], n_boot=n_boot)
            known_flags = flags[m][member & np.isfinite(scores[m]) & np.isfinite(flags[m])]
            rows.append({**span, "series": m, "kind": "model", **stats,
                         # same definition as usef eval: worse than the mixture
                         "failure_rate": _rate(ok < 0.0), "confusion_rate": _rate(known_flags)})
        for s, (a, b) in enumerate(pairs, start=len(models)):
            diff = (scores[a] - scores[b])[member]
            stats = bootstrap_mean(diff, seed=[seed, bin_seed + 1, s], n_boot=n_boot)
            rows.append({**span, "series": f"{a} - {b}", "kind": "difference", **stats,
                         "failure_rate": math.nan, "confusion_rate": math.nan})
    trend = [{"series": f"{a} - {b}", **slope_bootstrap(sim, scores[a] - scores[b],
                                                          seed=[seed, 0, s, 1], n_boot=n_boot)}
             for s, (a, b) in enumerate(pairs)]
    return {"edges": edges.tolist(), "bin": index.tolist(), "rows": rows, "trend": trend}
