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
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from usef.metrics import compute_metrics, energy_ratio_db, summarize

logger = logging.getLogger(__name__)

# returns the estimate, or (estimate, {column: value}) to add columns (e.g. which model served)
ExtractFn = Callable[[np.ndarray, np.ndarray, int], Any]
ProgressFn = Callable[[int, int, dict[str, Any]], None]

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
LEVEL_COLUMNS = ("peak", "mixture_peak")
# a mixture within this peak must give an estimate within full scale
HEADROOM_PEAK = 0.9
INTERFERER_COLUMNS = ("si_sdr_interferer", "confused")
PRESENCE_COLUMNS = ("target_present", "output_to_mixture_db")
# a target-absent output at least this far below its mixture counts as silent
ABSENT_SILENT_DB = -15.0
# the confidence report: the items kept when the least confident 10 % are dropped
DROP_SHARE = 0.10
REQUIRED_LIST_COLUMNS = ("mixture", "reference", "target")
FAILURE_COLUMNS = ("id", "error", "mixture")

__all__ = ["METRIC_COLUMNS", "evaluate_list", "read_eval_list"]


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


def read_mono(
    path: str | os.PathLike[str], role: str, sample_rate: int | None
) -> tuple[np.ndarray, int]:
    """Read ``path`` as float32 mono, resampled to ``sample_rate`` when given."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{role} file not found: {path}")
    try:
        wave, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types for corrupt files
        raise ValueError(f"cannot read {role} file {path}: {exc}") from exc
    if wave.shape[0] == 0:
        raise ValueError(f"{role} file is empty: {path}")
    mono = wave.mean(axis=1)
    if sample_rate is not None and rate != sample_rate:
        import soxr

        mono = soxr.resample(mono, rate, sample_rate).astype(np.float32)
        rate = sample_rate
    return mono, int(rate)


def safe_name(item_id: str) -> str:
    # ids become file names: keep them inside estimates/
    return item_id.replace("/", "_").replace("\\", "_").replace("..", "_") or "item"


def _write_wav_atomic(path: Path, wave: np.ndarray, sample_rate: int) -> None:
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp.wav"
    )
    os.close(fd)
    try:
        # float subtype: estimates may exceed [-1, 1] and must not be clipped
        sf.write(tmp, wave, sample_rate, format="WAV", subtype="FLOAT")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def csv_text(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for row in rows:
        writer.writerow({c: _csv_cell(row.get(c)) for c in columns})
    return buffer.getvalue()


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return value


def json_safe(value: Any) -> Any:
    """Replace NaN/inf by None so summary.json stays strict JSON."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


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
