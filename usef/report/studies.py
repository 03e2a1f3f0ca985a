"""Studies that sweep one inference setting over an evaluation list.

:func:`reference_length_study` asks how much enrolment speech a model needs: every
item's reference is cropped to each length in turn and the SI-SDR improvement is
measured per model, length and item. Outputs in ``out_dir``:

- ``reference_length.csv``  one row per model x length x item (``error`` column for bad items)
- ``summary.csv``           mean SI-SDRi with a 95 % CI, failure rate and the number of
                            references shorter than the requested length, per model and length
- ``reference_length.png``  mean SI-SDRi against reference length (log-2 axis), CI bands
- ``study.json``            the settings of the run

Audio is read as ``usef eval`` reads it (reference, target and interferer at the
mixture's rate), once per item, so the longest crop reproduces ``usef eval``'s
SI-SDRi. PESQ is not computed: the study runs ``models x lengths`` extractions per item.
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

from usef.atomic_io import atomic_write
from usef.evaluate import csv_text, json_safe, read_mono, write_text_atomic
from usef.metrics import si_sdr, summarize

logger = logging.getLogger(__name__)

__all__ = ["CROP_MODES", "crop_reference", "plot_reference_length", "reference_length_study"]

CROP_MODES = ("start", "random", "center")
ROWS_FILE = "reference_length.csv"
SUMMARY_FILE = "summary.csv"
PLOT_FILE = "reference_length.png"
SETTINGS_FILE = "study.json"
SUMMARY_COLUMNS = (
    "model", "length_s", "n", "mean", "ci95_low", "ci95_high", "failure_rate", "n_shorter", "n_errors",
)
_REPORT_HINT = "the reference-length plot needs matplotlib: pip install usef[report]"

ExtractFn = Callable[[np.ndarray, np.ndarray, int], np.ndarray]
ProgressFn = Callable[[int, int, dict[str, Any]], None]


def crop_reference(
    reference: np.ndarray,
    sample_rate: int,
    seconds: float,
    crop: str = "start",
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, int]:
    """Cut ``seconds`` of ``reference``; a shorter reference is returned whole.

    ``crop``: ``start`` (from sample 0), ``center`` or ``random`` (a uniform offset
    drawn from ``rng``, which is then required). Returns ``(crop, offset)`` with
    ``offset`` the first sample taken.

    Shape:
        reference ``(T_ref,)`` -> ``(min(T_ref, round(seconds * sample_rate)),)``
    """
    if crop not in CROP_MODES:
        raise ValueError(f"crop: must be one of {', '.join(CROP_MODES)}, got {crop!r}")
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"seconds: must be a positive number, got {seconds!r}")
    wanted = max(1, round(seconds * sample_rate))
    spare = reference.shape[0] - wanted
    if spare <= 0:
        return reference, 0
    if crop == "start":
        offset = 0
    elif crop == "center":
        offset = spare // 2
    else:
        if rng is None:
            raise ValueError("rng: a numpy Generator is required for crop='random'")
        offset = int(rng.integers(0, spare + 1))
    return reference[offset : offset + wanted], offset


def _as_extract_fn(name: str, extractor: Any) -> ExtractFn:
    # a usef.Extractor has .extract(mixture, reference, sample_rate=) but is not callable
    if hasattr(extractor, "extract") and not callable(extractor):
        return lambda mixture, reference, rate: extractor.extract(mixture, reference, sample_rate=rate)
    if not callable(extractor):
        raise TypeError(f"extractors[{name!r}]: expected a callable or an object with .extract, "
                        f"got {type(extractor).__name__}")
    return extractor


def _check_lengths(lengths: Sequence[float]) -> list[float]:
    values = [float(v) for v in lengths]
    if not values:
        raise ValueError("lengths: give at least one reference length in seconds")
    bad = [v for v in values if not (math.isfinite(v) and v > 0)]
    if bad:
        raise ValueError(f"lengths: must be positive seconds, got {bad}")
    if len(set(values)) != len(values):
        raise ValueError(f"lengths: contains duplicates: {values}")
    return sorted(values)


def _load_item(item: Mapping[str, Any]) -> dict[str, Any]:
    for key in ("mixture", "reference", "target"):
        if not item.get(key):
            raise ValueError(f"item has no {key!r} path")
    mixture, rate = read_mono(item["mixture"], "mixture", None)
    loaded = {"mixture": mixture, "rate": rate}
    for role in ("reference", "target", "interferer"):
        if item.get(role):
            loaded[role], _ = read_mono(item[role], role, rate)
    for role in ("target", "interferer"):
        if role in loaded and loaded[role].shape != mixture.shape:
            raise ValueError(
                f"{role} has {loaded[role].shape[0]} samples but the mixture has {mixture.shape[0]}"
            )
    loaded["input_si_sdr"] = si_sdr(mixture, loaded["target"])
    return loaded


def _score(extract_fn: ExtractFn, audio: Mapping[str, Any], reference: np.ndarray) -> dict[str, Any]:
    mixture = audio["mixture"]
    estimate = extract_fn(mixture, reference, audio["rate"])
    if hasattr(estimate, "detach"):
        estimate = estimate.detach().cpu().numpy()
    estimate = np.asarray(estimate, dtype=np.float32).squeeze()
    if estimate.shape != mixture.shape:
        raise ValueError(f"extractor returned shape {estimate.shape}, expected the mixture's {mixture.shape}")
    out = si_sdr(estimate, audio["target"])
    scores: dict[str, Any] = {"si_sdr_imp": out - audio["input_si_sdr"]}
    if "interferer" in audio:
        scores["confused"] = bool(si_sdr(estimate, audio["interferer"]) > out)
    return scores


def reference_length_study(
    extractors: Mapping[str, Any],
    items: Sequence[Mapping[str, Any]],
    lengths: Sequence[float],
    out_dir: str | os.PathLike[str],
    seed: int = 0,
    crop: str = "start",
    progress: ProgressFn | None = None,
    settings: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Measure SI-SDRi against reference length for each model and write the study files.

    Args:
        extractors: display name (plot legend, ``model`` column) -> callable
            ``extract_fn(mixture (T,), reference (T_ref,), sample_rate) -> estimate (T,)``,
            or a :class:`usef.Extractor`.
        items: dicts with ``id, mixture, reference, target`` paths and an optional
            ``interferer`` (the other talkers, for the ``confused`` column), as
            :func:`usef.evaluate.read_eval_list` returns them.
        lengths: reference lengths in seconds (positive, distinct; sorted here).
        out_dir: created if needed.
        seed: seeds the ``random`` crops; the offset of an item at a length depends
            only on ``(seed, item index, length index)``, so every model hears the
            same crop and reruns reproduce it.
        crop: ``start``, ``random`` or ``center`` (see :func:`crop_reference`).
        progress: called after each extraction as ``progress(done, total, row)``.
        settings: extra entries for ``study.json`` (e.g. the command line).

    Returns:
        The summary rows written to ``summary.csv``: model, length_s, n, mean,
        ci95_low, ci95_high, failure_rate (share with SI-SDRi < 0), n_shorter
        (references shorter than the length, used whole), n_errors, and
        confusion_rate when the items have interferers.

    Raises:
        ValueError: empty ``extractors`` or ``items``, bad ``lengths`` or ``crop``.
        ImportError: matplotlib is missing (checked before any extraction).
    """
    if not extractors:
        raise ValueError("extractors: give at least one model")
    if not items:
        raise ValueError("items: the evaluation list is empty")
    if crop not in CROP_MODES:
        raise ValueError(f"crop: must be one of {', '.join(CROP_MODES)}, got {crop!r}")
    grid = _check_lengths(lengths)
    fns = {str(name): _as_extract_fn(str(name), fn) for name, fn in extractors.items()}
    _require_matplotlib()  # fail before hours of extraction, not after
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    has_interferer = any(item.get("interferer") for item in items)

    # indexed by (model, length index, item index) so the files list models x lengths x items
    rows: dict[tuple[str, int, int], dict[str, Any]] = {}
    total, done = len(items) * len(fns) * len(grid), 0
    for i, item in enumerate(items):
        item_id = str(item.get("id") or f"item{i}")
        error = ""
        try:
            audio = _load_item(item)
        except Exception as exc:  # noqa: BLE001 - one bad item must not stop the study
            error = f"{type(exc).__name__}: {exc}"
            logger.warning("item %s skipped: %s", item_id, error)
            audio = None
        for k, length in enumerate(grid):
            crop_info: dict[str, Any] = {"actual_length_s": float("nan"), "offset_s": float("nan")}
            if audio is not None:
                rng = np.random.default_rng([seed, i, k]) if crop == "random" else None
                reference, offset = crop_reference(audio["reference"], audio["rate"], length, crop, rng)
                rate = audio["rate"]
                crop_info = {
                    "actual_length_s": reference.shape[0] / rate,
                    "offset_s": offset / rate,
                    "shorter": reference.shape[0] < round(length * rate),
                }
            for name, fn in fns.items():
                row: dict[str, Any] = {"model": name, "length_s": length, **crop_info, "id": item_id,
                                       "si_sdr_imp": float("nan"), "error": ""}
                if audio is None:
                    row["error"] = error
                else:
                    try:
                        row.update(_score(fn, audio, reference))
                    except Exception as exc:  # noqa: BLE001 - recorded in the error column
                        row["error"] = f"{type(exc).__name__}: {exc}"
                        logger.warning("%s at %g s failed on %s: %s", name, length, item_id, row["error"])
                rows[(name, k, i)] = row
                done += 1
                if progress is not None:
                    progress(done, total, row)

    ordered = [rows[key] for key in sorted(rows, key=lambda key: (list(fns).index(key[0]), key[1], key[2]))]
    columns = ["model", "length_s", "actual_length_s", "offset_s", "id", "si_sdr_imp"]
    columns += ["confused"] if has_interferer else []
    columns.append("error")
    write_text_atomic(out / ROWS_FILE, csv_text(columns, ordered))

    summary = [_summarize_group(name, length, [rows[(name, k, i)] for i in range(len(items))], has_interferer)
               for name in fns for k, length in enumerate(grid)]
    summary_columns = list(SUMMARY_COLUMNS) + (["confusion_rate"] if has_interferer else [])
    write_text_atomic(out / SUMMARY_FILE, csv_text(summary_columns, summary))
    plot_reference_length(summary, out / PLOT_FILE, n_items=len(items))

    record = {
        **dict(settings or {}),
        "study": "reference_length",
        "models": list(fns),
        "lengths_s": grid,
        "crop": crop,
        "seed": seed,
        "n_items": len(items),
        "n_errors": sum(1 for row in ordered if row["error"]),
        "files": [ROWS_FILE, SUMMARY_FILE, PLOT_FILE, SETTINGS_FILE],
    }
    write_text_atomic(out / SETTINGS_FILE, json.dumps(json_safe(record), indent=2) + "\n")
    logger.info("reference-length study: %d models x %d lengths x %d items into %s",
                len(fns), len(grid), len(items), out)
    return summary


def _summarize_group(
    name: str, length: float, group: Sequence[Mapping[str, Any]], has_interferer: bool
) -> dict[str, Any]:
    ok = [row for row in group if not row["error"]]
    stats = summarize([row["si_sdr_imp"] for row in ok])
    imps = [row["si_sdr_imp"] for row in ok if math.isfinite(row["si_sdr_imp"])]
    result: dict[str, Any] = {
        "model": name,
        "length_s": length,
        "n": stats["n"],
        "mean": stats["mean"],
        "ci95_low": stats["ci95_low"],
        "ci95_high": stats["ci95_high"],
        # same definition as usef eval: the extractor made the item worse than the mixture
        "failure_rate": sum(v < 0.0 for v in imps) / len(imps) if imps else float("nan"),
        "n_shorter": sum(1 for row in group if row.get("shorter")),
        "n_errors": len(group) - len(ok),
    }
    if has_interferer:
        flags = [row["confused"] for row in ok if "confused" in row]
        result["confusion_rate"] = sum(flags) / len(flags) if flags else float("nan")
    return result


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ImportError(_REPORT_HINT) from exc


def plot_reference_length(
    summary: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], n_items: int | None = None
) -> Path:
    """Draw mean SI-SDRi against reference length, one line and 95 % CI band per model.

    ``summary`` holds rows as :func:`reference_length_study` returns them. Lengths
    where some references were shorter than requested (and used whole) say how
    many under their tick. Written with the Agg canvas, without pyplot, so the
    caller's matplotlib backend is left alone. Returns ``path``.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(_REPORT_HINT) from exc
    path = Path(path)
    models = list(dict.fromkeys(row["model"] for row in summary))
    lengths = sorted({float(row["length_s"]) for row in summary})
    shorter = {length: max(int(r["n_shorter"]) for r in summary if float(r["length_s"]) == length)
               for length in lengths}

    fig = Figure(figsize=(6.4, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name in models:
        group = sorted((r for r in summary if r["model"] == name), key=lambda r: float(r["length_s"]))
        x = np.array([float(r["length_s"]) for r in group])
        mean = np.array([float(r["mean"]) for r in group])
        low = np.array([float(r["ci95_low"]) for r in group])
        high = np.array([float(r["ci95_high"]) for r in group])
        (line,) = ax.plot(x, mean, marker="o", label=name)
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths)
    ax.set_xticklabels([f"{v:g}" + (f"\n({shorter[v]} shorter)" if shorter[v] else "") for v in lengths])
    ax.minorticks_off()
    ax.set_xlabel("reference length (s)")
    ax.set_ylabel("SI-SDRi (dB), mean and 95% CI")
    ax.axhline(0.0, color="0.6", linewidth=0.8)
    ax.grid(True, alpha=0.3)
    ax.legend()
    note = f"{n_items} items" if n_items is not None else ""
    if any(shorter.values()):
        note += "; references shorter than the length were used whole"
    if note:
        ax.set_title(note.lstrip("; "), fontsize=9)
    fig.tight_layout()

    return save_png_atomic(fig, path)


def save_png_atomic(fig: Any, path: Path) -> Path:
    """Write a matplotlib figure as PNG via a temporary file and a rename: a reader never
    sees half a plot."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"), suffix=".tmp.png", fsync=False)
    return path
