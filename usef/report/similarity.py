"""Does a model's score depend on how alike target and interferer sound?

The thesis under test: a model conditioned on one speaker vector loses more against
the embedding-free USEF model the closer the interfering voice is to the target's,
because a single vector separates close voices poorly. :func:`similarity_study`
scores every model on every item of an evaluation list (full reference, as
``usef eval`` does), measures how alike the target and interferer recordings are,
cuts the items into quantile bins of that measure and reports, per bin, each
model's mean SI-SDRi and the paired difference between models, with seeded
bootstrap intervals.

Similarity measures (``kind``):

- ``pitch``: distance between the median F0 of target and interferer
  (:func:`usef.data.pitch.median_f0`), ``|12 log2(f0_t / f0_i)|`` semitones;
  smaller = more alike. NumPy only.
- ``dvector``: cosine between resemblyzer d-vectors of target and interferer
  (:class:`usef.embeddings.ResemblyzerEmbedder`, the ``resemblyzer`` extra);
  larger = more alike.
- ``auto``: ``dvector`` when resemblyzer is importable, else ``pitch``.

Outputs in ``out_dir``:

- ``similarity.csv``       one row per item: id, similarity (and both F0s for pitch), its
                           bin, input SI-SDR, each model's SI-SDRi and confusion flag, errors
- ``similarity_bins.csv``  per bin (and ``all``) and series (each model, each paired
                           difference): similarity range, n, mean SI-SDRi, 95 % bootstrap CI,
                           failure and confusion rates
- ``similarity.json``      the settings, the measure used, the bin table and the trend
                           (least-squares slope of the per-item paired difference against
                           similarity, with a bootstrap CI)
- ``similarity.png``       SI-SDRi per bin and model, and the paired difference per bin
                           (skipped with a log line when matplotlib is missing)
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from usef.evaluate import csv_text, json_safe, write_text_atomic
from usef.report.studies import (
    ProgressFn,
    _as_extract_fn,
    _load_item,
    _score,
    save_png_atomic,
)

logger = logging.getLogger(__name__)

__all__ = [
    "MEASURES",
    "SIMILARITY_KINDS",
    "bootstrap_mean",
    "dvector_similarity",
    "pitch_similarity",
    "plot_similarity",
    "quantile_bins",
    "read_similarity",
    "resolve_kind",
    "similarity_study",
    "similarity_table",
    "slope_bootstrap",
]

SIMILARITY_KINDS = ("auto", "pitch", "dvector")
# what the number means and which way is "more alike"; the plot and the printed table say it
MEASURES: dict[str, dict[str, str]] = {
    "pitch": {"label": "median-F0 distance target-interferer (semitones)", "unit": "semitone",
              "alike": "smaller"},
    "dvector": {"label": "d-vector cosine target-interferer (resemblyzer)", "unit": "unit of cosine",
                "alike": "larger"},
}
ITEMS_FILE = "similarity.csv"
BINS_FILE = "similarity_bins.csv"
RECORD_FILE = "similarity.json"
PLOT_FILE = "similarity.png"
BIN_COLUMNS = (
    "bin", "similarity_low", "similarity_high", "similarity_centre", "series", "kind", "n",
    "mean", "ci95_low", "ci95_high", "failure_rate", "confusion_rate",
)

# (target (T,), interferer (T,), sample_rate) -> {"similarity": float, ...extra columns}
SimilarityFn = Callable[[np.ndarray, np.ndarray, int], dict[str, float]]


def resemblyzer_available() -> bool:
    """True when the optional resemblyzer package imports."""
    try:
        with warnings.catch_warnings():  # its webrtcvad import warns about pkg_resources
            warnings.simplefilter("ignore")
            import resemblyzer  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_kind(kind: str) -> str:
    """``auto`` -> ``dvector`` when resemblyzer is installed, else ``pitch``; others unchanged."""
    if kind not in SIMILARITY_KINDS:
        raise ValueError(f"kind: must be one of {', '.join(SIMILARITY_KINDS)}, got {kind!r}")
    if kind != "auto":
        return kind
    return "dvector" if resemblyzer_available() else "pitch"


def pitch_similarity(target: np.ndarray, interferer: np.ndarray, sample_rate: int) -> dict[str, float]:
    """Median-F0 distance in semitones (NaN when either has no voiced frame) and both F0s.

    Shape:
        target ``(T,)``, interferer ``(T',)`` -> scalars.
    """
    from usef.data.pitch import f0_distance_semitones, median_f0

    f0_target = median_f0(np.asarray(target), sample_rate)
    f0_interferer = median_f0(np.asarray(interferer), sample_rate)
    return {
        "similarity": f0_distance_semitones(f0_target, f0_interferer),
        "target_f0": f0_target,
        "interferer_f0": f0_interferer,
    }


def dvector_similarity(embedder: Callable[[np.ndarray, int], np.ndarray]) -> SimilarityFn:
    """A :data:`SimilarityFn` giving the cosine of ``embedder``'s vectors of target and interferer.

    ``embedder(wave (T,), sample_rate) -> (E,)``, e.g. a
    :class:`usef.embeddings.ResemblyzerEmbedder`.
    """

    def similarity(target: np.ndarray, interferer: np.ndarray, sample_rate: int) -> dict[str, float]:
        a = np.asarray(embedder(target, sample_rate), dtype=np.float64)
        b = np.asarray(embedder(interferer, sample_rate), dtype=np.float64)
        norm = float(np.linalg.norm(a) * np.linalg.norm(b))
        return {"similarity": float(a @ b / norm) if norm > 0 else math.nan}

    return similarity


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


def _similarity_fn(kind: str, embedder: Callable[[np.ndarray, int], np.ndarray] | None) -> SimilarityFn:
    if kind == "pitch":
        return pitch_similarity
    if embedder is None:
        from usef.embeddings import ResemblyzerEmbedder

        embedder = ResemblyzerEmbedder()  # ImportError naming the extra when it is missing
    return dvector_similarity(embedder)


def read_similarity(path: str | os.PathLike[str], column: str = "similarity") -> tuple[dict[str, float], str]:
    """Per-item similarity from ``similarity.csv`` (or any CSV with ``id`` and ``column``).

    Returns ``({id: value}, title)``; the title names the measure (``similarity (pitch)``)
    when the study's ``similarity.json`` lies beside the CSV. Empty or unparsable cells
    are left out. Raises FileNotFoundError, or ValueError when a column is missing.
    """
    import csv

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"similarity file not found: {path}")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("id", column) if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (expected id and {column})")
        values = {}
        for row in reader:
            try:
                value = float(row[column])
            except (TypeError, ValueError):
                continue
            if math.isfinite(value):
                values[row["id"]] = value
    title = column
    record = path.parent / RECORD_FILE
    if column == "similarity" and record.is_file():
        try:
            title = f"similarity ({json.loads(record.read_text())['similarity']['kind']})"
        except (ValueError, KeyError, TypeError):  # another tool's JSON: the plain title will do
            pass
    return values, title


def similarity_study(
    extractors: Mapping[str, Any],
    items: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike[str],
    kind: str = "auto",
    n_bins: int = 4,
    seed: int = 0,
    n_boot: int = 2000,
    embedder: Callable[[np.ndarray, int], np.ndarray] | None = None,
    progress: ProgressFn | None = None,
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Score each model on each item, bin the items by voice similarity, write the study files.

    Args:
        extractors: display name -> ``extract_fn(mixture (T,), reference (T_ref,),
            sample_rate) -> estimate (T,)`` or a :class:`usef.Extractor`. The first is
            ``A`` of the paired differences ``A - B``.
        items: dicts with ``id, mixture, reference, target, interferer`` paths, as
            :func:`usef.evaluate.read_eval_list` returns them; every item needs an
            interferer (the similarity is measured between target and interferer).
        out_dir: created if needed.
        kind: ``pitch``, ``dvector`` or ``auto`` (see the module docstring).
        n_bins: quantile bins of the similarity.
        seed, n_boot: the bootstrap (see :func:`similarity_table`).
        embedder: the speaker embedder for ``dvector`` (default: a
            :class:`usef.embeddings.ResemblyzerEmbedder`).
        progress: called after each extraction as ``progress(done, total, row)``.
        settings: extra entries for ``similarity.json`` (e.g. the command line).

    Returns:
        The record written to ``similarity.json``: settings, ``similarity`` (kind,
        label, which way is more alike), ``edges``, ``rows`` (the bin table),
        ``trend``, ``n_items``, ``n_errors``, ``n_unknown_similarity``, ``files``.

    Raises:
        ValueError: no model or item, an item without interferer, bad ``kind`` or ``n_bins``,
            or no item with a finite similarity.
        ImportError: ``kind="dvector"`` without resemblyzer (before any extraction).
    """
    if not extractors:
        raise ValueError("extractors: give at least one model")
    if not items:
        raise ValueError("items: the evaluation list is empty")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins: must be a positive integer, got {n_bins!r}")
    lacking = [str(item.get("id") or f"item{i}") for i, item in enumerate(items) if not item.get("interferer")]
    if lacking:
        raise ValueError(f"items: {len(lacking)} item(s) have no interferer (e.g. {lacking[0]!r}); the "
                         "similarity study compares target and interferer, so the list needs an "
                         "interferer column")
    kind = resolve_kind(kind)
    similarity_of = _similarity_fn(kind, embedder)  # fails before the extractions, not after
    fns = {str(name): _as_extract_fn(str(name), fn) for name, fn in extractors.items()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    rows: list[dict[str, Any]] = []
    total, done = len(items) * len(fns), 0
    for i, item in enumerate(items):
        row: dict[str, Any] = {"id": str(item.get("id") or f"item{i}"), "similarity": math.nan}
        errors = []
        try:
            audio = _load_item(item)
        except Exception as exc:  # noqa: BLE001 - one bad item must not stop the study
            audio = None
            errors.append(f"{type(exc).__name__}: {exc}")
            logger.warning("item %s skipped: %s", row["id"], errors[-1])
        if audio is not None:
            # kept per item so a reader can check that a bin is not simply a harder input level
            row["input_si_sdr"] = audio["input_si_sdr"]
            try:
                row.update(similarity_of(audio["target"], audio["interferer"], audio["rate"]))
            except Exception as exc:  # noqa: BLE001 - the item still counts in "all"
                errors.append(f"similarity: {type(exc).__name__}: {exc}")
                logger.warning("no similarity for %s: %s", row["id"], errors[-1])
        for name, fn in fns.items():
            row[f"si_sdr_imp[{name}]"], row[f"confused[{name}]"] = math.nan, None
            if audio is not None:
                try:
                    scores = _score(fn, audio, audio["reference"])
                    row[f"si_sdr_imp[{name}]"] = scores["si_sdr_imp"]
                    row[f"confused[{name}]"] = scores.get("confused")
                except Exception as exc:  # noqa: BLE001 - recorded in the error column
                    errors.append(f"{name}: {type(exc).__name__}: {exc}")
                    logger.warning("%s failed on %s: %s", name, row["id"], errors[-1])
            done += 1
            if progress is not None:
                progress(done, total, row)
        row["error"] = "; ".join(errors)
        rows.append(row)

    table = similarity_table(
        [r["similarity"] for r in rows],
        {name: [r[f"si_sdr_imp[{name}]"] for r in rows] for name in fns},
        {name: [r[f"confused[{name}]"] for r in rows] for name in fns},
        n_bins=n_bins, seed=seed, n_boot=n_boot,
    )
    if len(table["edges"]) - 1 < n_bins:
        logger.warning("only %d distinct quantile bins of %d asked (many equal similarities)",
                       len(table["edges"]) - 1, n_bins)
    for row, k in zip(rows, table["bin"]):
        row["bin"] = k if k >= 0 else ""
    columns = ["id", "similarity", "bin"] + (["target_f0", "interferer_f0"] if kind == "pitch" else [])
    columns.append("input_si_sdr")
    columns += [f"{key}[{name}]" for name in fns for key in ("si_sdr_imp", "confused")] + ["error"]
    write_text_atomic(out / ITEMS_FILE, csv_text(columns, rows))
    write_text_atomic(out / BINS_FILE, csv_text(BIN_COLUMNS, table["rows"]))

    measure = {"kind": kind, **MEASURES[kind]}
    files = [ITEMS_FILE, BINS_FILE, RECORD_FILE]
    try:
        plot_similarity(table["rows"], out / PLOT_FILE, measure=measure, n_items=len(rows))
        files.append(PLOT_FILE)
    except ImportError:
        logger.info("matplotlib is missing (pip install usef[report]): %s not drawn", PLOT_FILE)
    record = {
        **dict(settings or {}),
        "study": "similarity",
        "similarity": measure,
        "models": list(fns),
        "n_bins": n_bins,
        "seed": seed,
        "n_boot": n_boot,
        "n_items": len(rows),
        "n_errors": sum(1 for r in rows if r["error"]),
        "n_unknown_similarity": sum(1 for r in rows if not math.isfinite(r["similarity"])),
        "edges": table["edges"],
        "rows": table["rows"],
        "trend": table["trend"],
        "files": files,
    }
    write_text_atomic(out / RECORD_FILE, json.dumps(json_safe(record), indent=2) + "\n")
    logger.info("similarity study (%s): %d models x %d items into %s", kind, len(fns), len(rows), out)
    return record


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
