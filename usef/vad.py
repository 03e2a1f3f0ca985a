"""Clean enrollment clips: drop leading/trailing silence and long pauses (voice activity).

A reference is most useful when every frame of it is the speaker's voice: silent frames give
the cross attention keys that match nothing (or the mixture's own pauses) and dilute a pooled
speaker vector. :func:`trim` keeps the speech regions of a clip with a small margin, keeps
short pauses (they are part of how a person speaks), cuts pauses longer than
``max_pause_seconds`` down to the margins, and never returns an empty clip: when it finds no
speech it returns the clip unchanged.

Two detectors:

- ``"energy"`` (default, no dependency): a frame is speech when its RMS is within
  ``threshold_db`` of the clip's loud frames (a high percentile of the frame levels), so the rule
  follows the recording's own level instead of an absolute one.
- ``"silero"``: the Silero VAD network (MIT; its weights ship in the ``silero-vad`` wheel), used
  only when that package is installed (:func:`available_methods`).
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["METHODS", "available_methods", "speech_regions", "trim"]

METHODS = ("energy", "silero")
# The energy rule: 20 ms frames; "loud" is the 95th percentile of frame levels (robust to a
# few clicks); speech is within 35 dB of it (a syllable's quiet tail, not the room's noise).
FRAME_SECONDS = 0.02
LOUD_PERCENTILE = 95.0
THRESHOLD_DB = 35.0
# below this a frame is digital silence whatever the clip's level
FLOOR_DB = -90.0
MARGIN_SECONDS = 0.1
MAX_PAUSE_SECONDS = 0.5
# speech shorter than this (a click, a door) is not worth a region of its own
MIN_SPEECH_SECONDS = 0.05
# silero's network runs at these rates only; others are resampled for detection
_SILERO_RATES = (8000, 16000)

Regions = list[tuple[int, int]]


def available_methods() -> tuple[str, ...]:
    """The detectors usable here: ``"energy"`` always, ``"silero"`` when it is installed."""
    try:
        import silero_vad  # noqa: F401
    except ImportError:
        return ("energy",)
    return METHODS


def _energy_regions(wave: np.ndarray, rate: int, threshold_db: float) -> Regions:
    hop = max(1, round(FRAME_SECONDS * rate))
    count = -(-wave.shape[0] // hop)
    frames = np.pad(wave.astype(np.float64), (0, count * hop - wave.shape[0])).reshape(count, hop)
    level = 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-20)
    loud = np.percentile(level, LOUD_PERCENTILE)
    active = level > max(loud - threshold_db, FLOOR_DB)
    # run boundaries of the active frames, as [start, end) sample ranges
    edges = np.flatnonzero(np.diff(np.concatenate(([0], active.astype(np.int8), [0]))))
    return [(int(a) * hop, min(int(b) * hop, wave.shape[0])) for a, b in zip(edges[::2], edges[1::2])]


def _silero_regions(wave: np.ndarray, rate: int) -> Regions:
    try:
        from silero_vad import get_speech_timestamps, load_silero_vad
    except ImportError as exc:
        raise ImportError("vad='silero' needs the silero-vad package (pip install silero-vad); "
                          "or use vad='energy'") from exc
    import torch

    from usef.audio import resample

    detect_rate = rate if rate in _SILERO_RATES else 16000
    signal = resample(wave, rate, detect_rate) if detect_rate != rate else wave
    stamps = get_speech_timestamps(torch.from_numpy(np.ascontiguousarray(signal, dtype=np.float32)),
                                   load_silero_vad(), sampling_rate=detect_rate)
    scale = rate / detect_rate
    return [(round(s["start"] * scale), min(round(s["end"] * scale), wave.shape[0])) for s in stamps]


def speech_regions(
    wave: np.ndarray,
    sample_rate: int,
    method: str = "energy",
    *,
    margin_seconds: float = MARGIN_SECONDS,
    max_pause_seconds: float = MAX_PAUSE_SECONDS,
    threshold_db: float = THRESHOLD_DB,
) -> Regions:
    """Sample ranges ``[start, end)`` of ``wave`` to keep, in order, not overlapping.

    Detected speech shorter than ``MIN_SPEECH_SECONDS`` is dropped; pauses up to
    ``max_pause_seconds`` inside speech are kept; each kept region gets ``margin_seconds``
    on both sides. Empty when no speech is found.

    Shape:
        wave ``(T,)`` -> list of ``(start, end)`` sample indices.

    Raises:
        ValueError: unknown ``method``; ImportError: ``"silero"`` without its package.
    """
    if method not in METHODS:
        raise ValueError(f"vad: must be one of {METHODS}, got {method!r}")
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"vad: expected a 1-D (T,) waveform, got shape {tuple(wave.shape)}")
    if wave.size == 0:
        return []
    found = _energy_regions(wave, sample_rate, threshold_db) if method == "energy" \
        else _silero_regions(wave, sample_rate)
    found = [(a, b) for a, b in found if b - a >= MIN_SPEECH_SECONDS * sample_rate]
    pause = round(max_pause_seconds * sample_rate)
    merged: Regions = []
    for start, end in found:
        if merged and start - merged[-1][1] <= pause:
            merged[-1] = (merged[-1][0], end)  # a short pause is part of the speech
        else:
            merged.append((start, end))
    margin = round(margin_seconds * sample_rate)
    kept: Regions = []
    for start, end in merged:
        start, end = max(0, start - margin), min(wave.shape[0], end + margin)
        if kept and start <= kept[-1][1]:
            kept[-1] = (kept[-1][0], end)
        else:
            kept.append((start, end))
    return kept


def trim(wave: np.ndarray, sample_rate: int, method: str = "energy", **options: float) -> np.ndarray:
    """``wave`` without its leading/trailing silence and long pauses (see :func:`speech_regions`).

    Returns ``wave`` itself when no speech is found (never an empty clip).

    Shape:
        ``(T,)`` -> ``(T',)``, ``T' <= T``.
    """
    regions = speech_regions(wave, sample_rate, method, **options)
    if not regions:
        logger.debug("vad: no speech found in a %.2f s clip; keeping all of it", len(wave) / sample_rate)
        return wave
    if len(regions) == 1 and regions[0] == (0, len(wave)):
        return wave
    return np.concatenate([wave[a:b] for a, b in regions])
