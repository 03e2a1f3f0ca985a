"""Small log-magnitude spectrogram thumbnails (PNG) for the listening report.

A thumbnail is a picture to glance at, not a measurement: each one is scaled to
its own peak (0 dB) with a fixed dynamic range, so a quiet estimate and a loud
target look alike when their content does. Frequency grows upwards, linearly.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["log_spectrogram", "spectrogram_image", "write_spectrogram_png"]

# about 32 ms analysis windows, whatever the sample rate
_WINDOW_SECONDS = 0.032


def _require_matplotlib() -> Any:
    try:
        import matplotlib.image as mpimg
    except ImportError as exc:  # an optional extra
        raise ImportError(
            "spectrogram thumbnails need matplotlib: pip install 'usef[report]'"
        ) from exc
    return mpimg


def log_spectrogram(
    wave: np.ndarray, sample_rate: int, n_fft: int | None = None, hop: int | None = None
) -> np.ndarray:
    """Log magnitude (dB, peak 0) of a mono waveform's short-time Fourier transform.

    Hann windows of ``n_fft`` samples (default: the power of two nearest 32 ms)
    every ``hop`` samples (default ``n_fft // 4``); a signal shorter than one
    window is zero-padded to one frame. Bins of zero power are ``-inf`` (an
    all-zero signal is ``-inf`` everywhere: a black thumbnail, not a bright one).

    Shape:
        wave: (T,) samples -> (F, frames) with F = n_fft // 2 + 1, row 0 = 0 Hz.
    """
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    x = np.asarray(wave, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"wave must be a non-empty 1-D array, got shape {x.shape}")
    if n_fft is None:
        n_fft = int(2 ** round(np.log2(_WINDOW_SECONDS * sample_rate)))
    if n_fft < 2:
        raise ValueError(f"n_fft must be at least 2, got {n_fft}")
    hop = hop or max(1, n_fft // 4)
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    frames = 1 + (x.size - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spectrum = np.fft.rfft(x[index] * np.hanning(n_fft)[None, :], axis=1)
    power = np.abs(spectrum.T) ** 2
    peak = float(power.max())
    if peak == 0.0:
        return np.full(power.shape, -np.inf)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(power / peak)


def _pool_max(values: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Resize ``axis`` to ``size`` cells, each the max of the source cells it covers.

    Max rather than mean keeps thin harmonics visible when many bins share one pixel;
    when the source is shorter than ``size``, cells repeat the nearest source cell.
    """
    n = values.shape[axis]
    starts = np.floor(np.arange(size) * n / size).astype(np.int64)
    return np.maximum.reduceat(values, starts, axis=axis)


def spectrogram_image(
    wave: np.ndarray,
    sample_rate: int,
    width: int = 200,
    height: int = 80,
    dynamic_range_db: float = 80.0,
) -> np.ndarray:
    """Log spectrogram resized to ``height x width`` and scaled to [0, 1] (1 = peak).

    Row 0 is the highest frequency, so the array reads like the picture.

    Shape:
        wave: (T,) samples -> (height, width)
    """
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be positive, got {width}x{height}")
    if dynamic_range_db <= 0:
        raise ValueError(f"dynamic_range_db must be positive, got {dynamic_range_db}")
    db = log_spectrogram(wave, sample_rate)
    db = _pool_max(_pool_max(db, height, axis=0), width, axis=1)
    image = np.clip(1.0 + db / dynamic_range_db, 0.0, 1.0)
    return image[::-1]


def write_spectrogram_png(
    wave: np.ndarray,
    sample_rate: int,
    path: str | os.PathLike[str],
    width: int = 200,
    height: int = 80,
    dynamic_range_db: float = 80.0,
    cmap: str = "magma",
) -> Path:
    """Write the :func:`spectrogram_image` of ``wave`` as a ``width x height`` PNG.

    Needs matplotlib (``usef[report]``); raises ImportError naming the extra.

    Shape:
        wave: (T,) samples
    """
    mpimg = _require_matplotlib()
    image = spectrogram_image(wave, sample_rate, width, height, dynamic_range_db)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # imsave maps one array cell to one pixel, so the PNG is exactly width x height
    mpimg.imsave(str(path), image, cmap=cmap, vmin=0.0, vmax=1.0, format="png")
    return path
