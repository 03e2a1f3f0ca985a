"""Signal-level augmentation for dynamic mixing: speed perturbation, synthetic room responses.

Speed perturbation resamples in the frequency domain (pitch and tempo change together, as
with sox ``speed``); FFT sizes are rounded up to 11-smooth lengths so that odd utterance
lengths never hit a slow prime-size FFT.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

_MAX_FFT = 1 << 24

__all__ = ["convolve", "equalize", "output_length", "power", "source_length", "speed_perturb", "synthetic_rir"]


def source_length(out_len: int, factor: float) -> int:
    """Input samples that become ``out_len`` samples when sped up by ``factor``."""
    return max(1, round(out_len * factor)) if out_len > 0 else 0


def output_length(src_len: int, factor: float) -> int:
    """Samples that ``src_len`` input samples become when sped up by ``factor``."""
    return max(1, round(src_len / factor)) if src_len > 0 else 0


@lru_cache(maxsize=1)
def _fast_sizes() -> np.ndarray:
    """Sorted 11-smooth numbers: FFT lengths pocketfft handles quickly."""
    sizes = {1}
    for prime in (2, 3, 5, 7, 11):
        grown = set()
        for v in sizes:
            while v <= _MAX_FFT:
                grown.add(v)
                v *= prime
        sizes = grown
    return np.array(sorted(sizes), dtype=np.int64)


def _fft_lengths(n_in: int, factor: float) -> tuple[int, int]:
    """Fast (padded input, output) FFT lengths whose ratio is closest to ``factor``.

    Arbitrary lengths can have large prime factors and make an FFT ten times slower.
    """
    sizes = _fast_sizes()
    first = int(np.searchsorted(sizes, n_in))
    cand_in = sizes[first : first + 8]
    if len(cand_in) == 0 or cand_in[-1] / factor >= sizes[-1]:
        return n_in, output_length(n_in, factor)
    ideal = cand_in / factor
    j = np.clip(np.searchsorted(sizes, ideal), 1, len(sizes) - 1)
    cand_out = np.where(ideal - sizes[j - 1] <= sizes[j] - ideal, sizes[j - 1], sizes[j])
    best = int(np.argmin(np.abs(cand_in / cand_out - factor)))
    return int(cand_in[best]), int(cand_out[best])


def speed_perturb(x: np.ndarray, factor: float) -> np.ndarray:
    """Play ``x`` ``factor`` times faster (pitch moves too) by band-limited FFT resampling.

    NumPy only. The spectrum is cut (``factor`` > 1, which also removes what would
    alias) or zero-extended (``factor`` < 1). ``x`` is zero-padded to a fast FFT
    length first, which makes the applied factor differ from ``factor`` by well
    under 0.5 %, harmless for augmentation.

    Shape:
        x: (T,) -> (round(T / factor),) float64.
    """
    if factor <= 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    x = np.asarray(x, dtype=np.float64)
    n_out = output_length(len(x), factor)
    if factor == 1.0 or len(x) < 2:
        return x.copy()
    len_in, len_out = _fft_lengths(len(x), factor)
    spec = np.fft.rfft(x, len_in)
    keep = min(len(spec), len_out // 2 + 1)
    out = np.zeros(len_out // 2 + 1, dtype=complex)
    out[:keep] = spec[:keep]
    y = np.fft.irfft(out, len_out) * (len_out / len_in)
    return np.pad(y, (0, max(0, n_out - len_out)))[:n_out]


def synthetic_rir(rng: np.random.Generator, rt60: float, sample_rate: int,
                  drr_db: float = 3.0) -> np.ndarray:
    """Unit direct path followed by exponentially decaying noise (60 dB in ``rt60`` s).

    The tail holds ``-drr_db`` dB of the direct path's energy. Shape: -> (L,).
    """
    if rt60 <= 0:
        raise ValueError(f"rt60 must be > 0, got {rt60}")
    n = max(2, int(rt60 * sample_rate))
    tail = rng.standard_normal(n) * np.exp(-6.9078 * np.arange(n) / (rt60 * sample_rate))
    tail[0] = 0.0
    tail *= math.sqrt(10 ** (-drr_db / 10) / max(float(np.sum(tail**2)), 1e-20))
    tail[0] = 1.0
    return tail


def convolve(x: np.ndarray, *filters: np.ndarray) -> tuple[np.ndarray, ...]:
    """Causal FFT convolution of ``x`` with each filter, truncated to len(x)."""
    needed = len(x) + max(len(h) for h in filters) - 1
    sizes = _fast_sizes()
    size = int(sizes[np.searchsorted(sizes, needed)]) if needed <= sizes[-1] else needed
    spec = np.fft.rfft(x, size)
    return tuple(np.fft.irfft(spec * np.fft.rfft(h, size), size)[: len(x)] for h in filters)


def power(x: np.ndarray) -> float:
    """Mean square of ``x``; 0 for an empty array."""
    return float(np.mean(x**2)) if x.size else 0.0


def equalize(x: np.ndarray, gains_db) -> np.ndarray:
    """Apply a smooth EQ: ``gains_db`` at points spaced evenly on a log-frequency axis from
    1/64 of the band to its top, interpolated between them (a stand-in for a different
    microphone or channel).

    Shape:
        x: (T,) -> (T,) float64.
    """
    gains = np.asarray(gains_db, dtype=np.float64)
    if gains.ndim != 1 or gains.size < 2:
        raise ValueError(f"gains_db must hold at least 2 values, got shape {gains.shape}")
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        return x.copy()
    spec = np.fft.rfft(x)
    bins = np.arange(len(spec), dtype=np.float64) / (len(spec) - 1)  # 0..1 of Nyquist
    anchors = np.geomspace(1.0 / 64.0, 1.0, gains.size)
    curve = np.interp(np.log(np.maximum(bins, anchors[0])), np.log(anchors), gains)
    return np.fft.irfft(spec * 10 ** (curve / 20), len(x))
