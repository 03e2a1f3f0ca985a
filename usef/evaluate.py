"""Run an extractor over a list of mixtures and write per-item and summary metrics.

This module knows nothing about models: the caller passes ``extract_fn(mixture,
reference, sample_rate) -> estimate`` (NumPy in, NumPy out). Outputs in
``out_dir``:

- ``estimates/<id>.wav``  extracted speech (32-bit float WAV, written atomically)
- ``metrics.csv``         one row per item, with an ``error`` column for bad items
- ``failures.csv``        id, error and mixture path of every item that failed
- ``summary.json``        mean / median / 95 % CI per metric, failure and confusion rates,
                          the output level (``level``: error against the target, clipping),
                          target-absent items (``target_absent``) and, when the extractor
                          returns a ``confidence`` column, how well it ranks (``confidence``)

Target-absent items (an empty ``target`` cell: the reference's talker does not speak in the
mixture) get no SI-SDR; their row holds ``output_to_mixture_db``, the estimate's energy
relative to the mixture's (silence is the right answer), and ``target_present`` 0.

A bad item (missing or corrupt file, an exception in ``extract_fn``) is recorded and
never stops the run.

The file helpers (mono audio in, atomic writes, CSV and strict JSON out) live in
:mod:`usef.evaluate_io` and the summary statistics in :mod:`usef.evaluate_summary`;
their public names are re-exported here.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from usef.evaluate_io import (
    _write_wav_atomic,
    csv_text,
    json_safe,
    read_mono,
    safe_name,
    write_text_atomic,
)
from usef.evaluate_summary import (
    ABSENT_SILENT_DB,
    DROP_SHARE,
    HEADROOM_PEAK,
    METRIC_COLUMNS,
    _summarize_rows,
    confidence_summary,
)
from usef.metrics import compute_metrics, energy_ratio_db

logger = logging.getLogger(__name__)

# returns the estimate, or (estimate, {column: value}) to add columns (e.g. which model served)
ExtractFn = Callable[[np.ndarray, np.ndarray, int], Any]
ProgressFn = Callable[[int, int, dict[str, Any]], None]

LEVEL_COLUMNS = ("peak", "mixture_peak")
INTERFERER_COLUMNS = ("si_sdr_interferer", "confused")
PRESENCE_COLUMNS = ("target_present", "output_to_mixture_db")
REQUIRED_LIST_COLUMNS = ("mixture", "reference", "target")
FAILURE_COLUMNS = ("id", "error", "mixture")

__all__ = [
    "ABSENT_SILENT_DB",
    "DROP_SHARE",
    "HEADROOM_PEAK",
    "METRIC_COLUMNS",
    "confidence_summary",
    "csv_text",
    "evaluate_list",
    "json_safe",
    "read_eval_list",
    "read_mono",
    "safe_name",
    "write_text_atomic",
]


def read_eval_list(csv_path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Read an evaluation list CSV into item dicts for :func:`evaluate_list`.

    Columns ``mixture, reference, target`` are required, ``id`` and ``interferer``
    optional. An empty ``target`` cell marks a target-absent item (the reference's talker
    does not speak in the mixture; the item has no ``target`` key). Relative paths are resolved against the CSV's folder; a missing or
    empty ``id`` becomes the mixture's file stem. Raises ``ValueError`` naming a
    missing column or a duplicate id, ``FileNotFoundError`` if the CSV is absent.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"evaluation list not found: {csv_path}")
    base = csv_path.resolve().parent
    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_LIST_COLUMNS if c not in columns]
        if missing:
            raise ValueError(
                f"{csv_path}: missing column(s) {', '.join(missing)}; "
                f"required: {', '.join(REQUIRED_LIST_COLUMNS)}, found: {', '.join(columns) or 'none'}"
            )
        rows = [
            {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            for row in reader
        ]

    def resolve(value: str) -> str:
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else base / path)

    items: list[dict[str, str]] = []
    seen: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        empty = [c for c in REQUIRED_LIST_COLUMNS if not row.get(c) and c != "target"]
        if empty:
            raise ValueError(
                f"{csv_path}, line {line}: empty value in column(s) {', '.join(empty)}"
            )
        item = {c: resolve(row[c]) for c in REQUIRED_LIST_COLUMNS if row.get(c)}
        item["id"] = row.get("id") or Path(row["mixture"]).stem
        if row.get("interferer"):
            item["interferer"] = resolve(row["interferer"])
        if item["id"] in seen:
            raise ValueError(
                f"{csv_path}, line {line}: duplicate id {item['id']!r} (first on line {seen[item['id']]})"
            )
        seen[item["id"]] = line
        items.append(item)
    return items


def _evaluate_item(
    item: Mapping[str, Any],
    extract_fn: ExtractFn,
    estimates_dir: Path | None,
    sample_rate: int | None,
    with_pesq: bool,
    with_stoi: bool = True,
) -> dict[str, Any]:
    for key in ("mixture", "reference"):
        if not item.get(key):
            raise ValueError(f"item has no {key!r} path")
    mixture, rate = read_mono(item["mixture"], "mixture", sample_rate)
    # every other file is brought to the mixture's rate so samples line up
    reference, _ = read_mono(item["reference"], "reference", rate)
    target = read_mono(item["target"], "target", rate)[0] if item.get("target") else None
    interferer = None
    if item.get("interferer"):
        interferer, _ = read_mono(item["interferer"], "interferer", rate)
    if target is not None and target.shape != mixture.shape:
        raise ValueError(
            f"target has {target.shape[0]} samples but the mixture has {mixture.shape[0]}"
        )
    if interferer is not None and interferer.shape != mixture.shape:
        raise ValueError(
            f"interferer has {interferer.shape[0]} samples but the mixture has {mixture.shape[0]}"
        )

    estimate = extract_fn(mixture, reference, rate)
    extra: dict[str, Any] = {}
    if isinstance(estimate, tuple):
        estimate, extra = estimate
    if hasattr(estimate, "detach"):
        estimate = estimate.detach().cpu().numpy()
    estimate = np.asarray(estimate, dtype=np.float32).squeeze()
    if estimate.shape != mixture.shape:
        raise ValueError(
            f"extract_fn returned shape {estimate.shape}, expected the mixture's shape {mixture.shape}"
        )
    if estimates_dir is not None:
        _write_wav_atomic(
            estimates_dir / f"{safe_name(str(item['id']))}.wav", estimate, rate
        )
    presence = {"target_present": int(target is not None),
                "output_to_mixture_db": energy_ratio_db(estimate, mixture)}
    if target is None:
        return {**dict(extra), **presence, "peak": float(np.max(np.abs(estimate), initial=0.0)),
                "mixture_peak": float(np.max(np.abs(mixture), initial=0.0))}
    return {**dict(extra), **presence, **compute_metrics(
        estimate, target, mixture, rate, interferer=interferer, with_pesq=with_pesq, with_stoi=with_stoi
    )}


def evaluate_list(
    items: Sequence[Mapping[str, Any]],
    extract_fn: ExtractFn,
    out_dir: str | os.PathLike[str],
    sample_rate: int | None = None,
    with_pesq: bool = True,
    write_estimates: bool = True,
    progress: ProgressFn | None = None,
    metadata: Mapping[str, Any] | None = None,
    with_stoi: bool = True,
) -> dict[str, Any]:
    """Evaluate ``extract_fn`` on every item and write the result files to ``out_dir``.

    Args:
        items: dicts with ``id, mixture, reference, target`` file paths and an
            optional ``interferer`` (sum of the other talkers, for confusion).
        extract_fn: ``(mixture (T,), reference (T_ref,), sample_rate) -> estimate (T,)``,
            or ``-> (estimate, {column: value})`` for per-item columns such as ``model``.
        out_dir: created if needed.
        sample_rate: resample all audio to this rate; None keeps each mixture's
            rate (reference, target and interferer follow the mixture).
        with_pesq: PESQ is the slowest metric; False writes ``nan`` instead.
        with_stoi: False writes ``nan`` for STOI.
        write_estimates: write ``estimates/<id>.wav``.
        progress: called after each item as ``progress(done, total, row)``.
        metadata: merged into summary.json (e.g. ``{"model": {...}}``); computed
            keys take precedence.

    Returns:
        The summary dict that was written to ``summary.json``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    estimates_dir = out / "estimates" if write_estimates else None
    if estimates_dir is not None:
        estimates_dir.mkdir(exist_ok=True)

    rows: list[dict[str, Any]] = []
    total = len(items)
    for index, item in enumerate(items):
        item_id = str(item.get("id") or f"item{index}")
        row: dict[str, Any] = {
            "id": item_id,
            "mixture": str(item.get("mixture", "")),
            "error": "",
        }
        try:
            row.update(
                _evaluate_item(
                    {**item, "id": item_id},
                    extract_fn,
                    estimates_dir,
                    sample_rate,
                    with_pesq,
                    with_stoi,
                )
            )
        except Exception as exc:  # noqa: BLE001 - one bad item must not stop the run
            row["error"] = f"{type(exc).__name__}: {exc}"
            logger.warning("item %s failed: %s", item_id, row["error"])
        rows.append(row)
        if progress is not None:
            progress(index + 1, total, row)

    has_interferer = any("confused" in row for row in rows)
    extra_columns = sorted({k for row in rows for k in row} - {"id", "mixture", "error", *METRIC_COLUMNS,
                                                                *LEVEL_COLUMNS, *INTERFERER_COLUMNS,
                                                                *PRESENCE_COLUMNS})
    # the presence columns only when the list has target-absent items: other runs keep their layout
    presence = list(PRESENCE_COLUMNS) if any(not row.get("target_present", 1) for row in rows) else []
    columns = ["id", *extra_columns, *presence, *METRIC_COLUMNS, *LEVEL_COLUMNS]
    if has_interferer:
        columns += list(INTERFERER_COLUMNS)
    columns.append("error")
    failed = [row for row in rows if row["error"]]
    write_text_atomic(out / "metrics.csv", csv_text(columns, rows))
    write_text_atomic(out / "failures.csv", csv_text(FAILURE_COLUMNS, failed))

    summary = _summarize_rows(rows, has_interferer)
    for key in metadata or {}:
        if key in summary:
            logger.warning(
                "metadata key %r clashes with a computed summary field; keeping the computed one",
                key,
            )
    summary = {**dict(metadata or {}), **summary}
    summary = json_safe(summary)
    write_text_atomic(
        out / "summary.json", json.dumps(summary, indent=2, sort_keys=False) + "\n"
    )
    logger.info("evaluated %d items (%d failed) into %s", total, len(failed), out)
    return summary
