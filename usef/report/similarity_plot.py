"""The picture of the similarity study: SI-SDRi per similarity bin and model, and the paired
differences (``similarity.png``)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from usef.report.studies import save_png_atomic

__all__ = ["plot_similarity"]


def plot_similarity(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    measure: Mapping[str, str] | None = None,
    n_items: int | None = None,
) -> Path:
    """Two panels over the similarity bins (x: the bin's median similarity): mean SI-SDRi
    with 95 % CI bars per model, and each paired difference with its CI.

    ``rows`` as :func:`similarity_table` returns them (the ``all`` rows are not drawn).
    Written with the Agg canvas, without pyplot, so the caller's backend is left
    alone. Returns ``path``; raises ImportError without matplotlib.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    binned = [r for r in rows if r["bin"] != "all" and math.isfinite(float(r["similarity_centre"]))]
    centres = sorted({float(r["similarity_centre"]) for r in binned})
    span = (centres[-1] - centres[0]) if len(centres) > 1 else 1.0
    fig = Figure(figsize=(6.4, 6.4), dpi=120)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    for ax, kind in ((top, "model"), (bottom, "difference")):
        series = list(dict.fromkeys(r["series"] for r in binned if r["kind"] == kind))
        for s, name in enumerate(series):
            group = sorted((r for r in binned if r["series"] == name), key=lambda r: float(r["similarity_centre"]))
            # a small sideways shift keeps the CI bars of the models apart
            shift = (s - (len(series) - 1) / 2) * 0.015 * span
            x = np.array([float(r["similarity_centre"]) for r in group]) + shift
            mean = np.array([float(r["mean"]) for r in group])
            low = np.array([float(r["ci95_low"]) for r in group])
            high = np.array([float(r["ci95_high"]) for r in group])
            yerr = np.nan_to_num(np.vstack([mean - low, high - mean]))
            ax.errorbar(x, mean, yerr=yerr, marker="o", capsize=3, label=name)
        ax.axhline(0.0, color="0.6", linewidth=0.8)
        ax.grid(True, alpha=0.3)
        if series:
            ax.legend(fontsize=8)
    top.set_ylabel("SI-SDRi (dB), mean, 95% CI")
    bottom.set_ylabel("paired difference (dB)")
    label = (measure or {}).get("label", "similarity")
    alike = (measure or {}).get("alike")
    bottom.set_xlabel(f"{label}, bin median" + (f"\n({alike} = more alike)" if alike else ""))
    n_per_bin = sorted({int(r["n"]) for r in binned if r["kind"] == "model"})
    title = f"{n_items} items" if n_items is not None else ""
    if n_per_bin:
        title += f", {len(centres)} bins of {n_per_bin[0]}-{n_per_bin[-1]} items"
    if title:
        top.set_title(title.lstrip(", "), fontsize=9)
    fig.tight_layout()

    return save_png_atomic(fig, path)
