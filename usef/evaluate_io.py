"""File helpers of ``usef eval`` and the studies: mono audio in, atomic writes out.

Reading any audio file as float32 mono at a given rate, file names from item ids,
WAV and text files written atomically (a temporary file renamed over the target),
CSV text with fixed number formatting, and strict JSON (NaN/inf as null).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from usef.atomic_io import atomic_write
from usef.atomic_io import write_text_atomic as _write_text_atomic

__all__ = ["csv_text", "json_safe", "read_mono", "safe_name", "write_text_atomic"]


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
    # float subtype: estimates may exceed [-1, 1] and must not be clipped
    atomic_write(path, lambda tmp: sf.write(tmp, wave, sample_rate, format="WAV", subtype="FLOAT"),
                 suffix=".tmp.wav", fsync=False)


def write_text_atomic(path: Path, text: str) -> None:
    _write_text_atomic(path, text, newline="")


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
