"""Speaker pitch: a voice-similarity measure that needs nothing but NumPy.

Two talkers with close median F0 are the hard case for target extraction (most same-sex
pairs fall within a few semitones; most mixed-sex pairs lie 8-12 semitones apart). The
dynamic mixer uses it to draw similar interferers; the similarity study and the dev
subsets use it to sort items by how alike the two voices are.

The tracker is a plain normalised-autocorrelation one (frames of 40 ms, hop 20 ms, F0 in
60-400 Hz, a frame counts as voiced when its normalised autocorrelation peak exceeds
0.5 and its energy is within 30 dB of the loudest frame). Octave errors on single
frames are absorbed by taking the median over a whole utterance.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

__all__ = ["f0_distance_semitones", "median_f0", "speaker_median_f0"]

_VOICED_PEAK = 0.5
_ENERGY_FLOOR_DB = 30.0


def median_f0(x: np.ndarray, sample_rate: int, fmin: float = 60.0, fmax: float = 400.0,
              frame_seconds: float = 0.04, hop_seconds: float = 0.02) -> float:
    """Median F0 in Hz over the voiced frames of ``x``; NaN when no frame is voiced.

    Shape:
        x: (T,) -> float.
    """
    if not 0 < fmin < fmax < sample_rate / 2:
        raise ValueError(f"need 0 < fmin < fmax < sample_rate / 2, got {fmin}, {fmax}, {sample_rate}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"x must be 1-D (T,), got shape {x.shape}")
    n, hop = round(frame_seconds * sample_rate), max(1, round(hop_seconds * sample_rate))
    if len(x) < n:
        return math.nan
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[::hop]  # (N_frames, n)
    frames = (frames - frames.mean(axis=1, keepdims=True)) * np.hanning(n)
    energy = np.sum(frames**2, axis=1)
    if energy.max() <= 0:
        return math.nan
    keep = energy > energy.max() * 10 ** (-_ENERGY_FLOOR_DB / 10)
    frames, energy = frames[keep], energy[keep]
    spec = np.fft.rfft(frames, 2 * n, axis=1)
    acf = np.fft.irfft(np.abs(spec) ** 2, 2 * n, axis=1)[:, :n] / energy[:, None]
    lo, hi = math.floor(sample_rate / fmax), min(n - 1, math.ceil(sample_rate / fmin))
    lags = lo + np.argmax(acf[:, lo:hi + 1], axis=1)
    peaks = acf[np.arange(len(lags)), lags]
    # a maximum on the edge of the lag range is no period (breath, fricative noise)
    voiced = (peaks > _VOICED_PEAK) & (lags > lo) & (lags < hi)
    if not voiced.any():
        return math.nan
    return float(np.median(sample_rate / lags[voiced]))


def speaker_median_f0(speech, speakers: Iterable[str] | None = None, max_seconds: float = 30.0) -> dict[str, float]:
    """Median F0 (Hz) of each speaker of a :class:`usef.data.SpeakerCorpus`, from at most
    ``max_seconds`` of their first utterances; NaN for a speaker with no voiced frame."""
    out = {}
    limit = round(max_seconds * speech.sample_rate)
    for spk in speech.speakers if speakers is None else speakers:
        parts, total = [], 0
        for k in range(speech.num_utterances(spk)):
            if total >= limit:
                break
            clip = np.asarray(speech.load(spk, k), dtype=np.float64)[: limit - total]
            parts.append(clip)
            total += len(clip)
        out[spk] = median_f0(np.concatenate(parts), speech.sample_rate) if parts else math.nan
    return out


def f0_distance_semitones(f0_a: float, f0_b: float) -> float:
    """|12 log2(f0_a / f0_b)|: 0 for identical pitch; NaN if either is unknown."""
    if not (f0_a > 0 and f0_b > 0):
        return math.nan
    return abs(12.0 * math.log2(f0_a / f0_b))
