"""Long signals in overlapping chunks, cross-faded back together.

Torch-free: the torch API (:mod:`usef.api`) and the ONNX runtime (:mod:`usef.onnx_runtime`)
share it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["chunk_starts", "chunked_overlap_add", "grid_offsets"]


def grid_offsets(hop_length: int, shifts: Any) -> list[int]:
    """Delays in samples of the ``shifts`` STFT frame grids that are averaged at inference
    (``k * hop_length // shifts``, ``k = 0 .. shifts-1``): the one rule of
    :meth:`usef.models.base.TargetSpeakerExtractor.extract` and the ONNX runtime.

    Raises:
        ValueError: ``shifts`` is not an integer in ``1..hop_length``.
    """
    if isinstance(shifts, bool) or not isinstance(shifts, int) or not 1 <= shifts <= hop_length:
        raise ValueError(f"shifts: must be an integer in 1..{hop_length} (the model's hop), got {shifts!r}")
    return [k * hop_length // shifts for k in range(shifts)]


def chunk_starts(total: int, chunk: int, overlap: int) -> list[int]:
    """Starts of ``chunk``-sample windows over ``total`` samples, consecutive ones overlapping by
    at least ``overlap``; the last window ends at the end (so every window has full context)."""
    starts = [0]
    while starts[-1] + chunk < total:
        starts.append(min(starts[-1] + chunk - overlap, total - chunk))
    return starts


def chunked_overlap_add(wave: np.ndarray, chunk: int, overlap: float,
                        run: Callable[[np.ndarray], np.ndarray], batch_size: int = 1,
                        progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Process a long signal in overlapping chunks and cross-fade the results (torch-free: the
    torch API and the ONNX runtime share it).

    Over each overlap the earlier chunk fades out and the later one in with complementary
    raised-cosine (sin^2 / cos^2) weights that sum to one, so estimates are added straight into
    the output (no normalisation buffer). ``run`` maps a ``(B, chunk)`` batch to ``(B, chunk)``
    and is called with up to ``batch_size`` chunks at a time; ``progress(done, total)`` after each.

    Shape:
        wave: (T,) with T >= chunk -> (T,).
    """
    n_overlap = round(chunk * overlap)
    starts = chunk_starts(wave.shape[0], chunk, n_overlap)
    ramp = np.sin(0.5 * np.pi * (np.arange(n_overlap) + 0.5) / max(n_overlap, 1)) ** 2
    fade_in, fade_out = ramp.astype(np.float32), (1.0 - ramp).astype(np.float32)
    out = np.zeros_like(wave)
    for first in range(0, len(starts), batch_size):
        group = starts[first : first + batch_size]
        estimates = run(np.stack([wave[s : s + chunk] for s in group]))
        for j, (start, est) in enumerate(zip(group, estimates)):
            k = first + j
            if k > 0 and n_overlap:
                # cross-fade with the previous chunk over its last `n_overlap` samples
                fade_start = starts[k - 1] + chunk - n_overlap - start
                est[:fade_start] = 0.0
                est[fade_start : fade_start + n_overlap] *= fade_in
            elif k > 0:
                est[: starts[k - 1] + chunk - start] = 0.0
            if k < len(starts) - 1 and n_overlap:
                est[chunk - n_overlap :] *= fade_out
            out[start : start + chunk] += est
        if progress is not None:
            progress(min(first + batch_size, len(starts)), len(starts))
    return out
