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

The measures live in :mod:`usef.report.similarity_measures`, the bins, bootstrap and bin
table in :mod:`usef.report.similarity_stats` and the plot in
:mod:`usef.report.similarity_plot`; their public names are re-exported here.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from usef.evaluate_io import csv_text, json_safe, write_text_atomic
from usef.report.similarity_measures import (
    MEASURES,
    SIMILARITY_KINDS,
    SimilarityFn,
    _similarity_fn,
    dvector_similarity,
    pitch_similarity,
    resemblyzer_available,
    resolve_kind,
)
from usef.report.similarity_plot import plot_similarity
from usef.report.similarity_stats import (
    BIN_COLUMNS,
    bootstrap_mean,
    quantile_bins,
    similarity_table,
    slope_bootstrap,
)
from usef.report.studies import ProgressFn, _as_extract_fn, _load_item, _score

logger = logging.getLogger(__name__)

__all__ = [
    "BIN_COLUMNS",
    "MEASURES",
    "SIMILARITY_KINDS",
    "SimilarityFn",
    "bootstrap_mean",
    "dvector_similarity",
    "pitch_similarity",
    "plot_similarity",
    "quantile_bins",
    "read_similarity",
    "resemblyzer_available",
    "resolve_kind",
    "similarity_study",
    "similarity_table",
    "slope_bootstrap",
]

ITEMS_FILE = "similarity.csv"
BINS_FILE = "similarity_bins.csv"
RECORD_FILE = "similarity.json"
PLOT_FILE = "similarity.png"


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
