"""usef.vad: energy-based trimming of enrollment clips."""

from __future__ import annotations

import numpy as np
import pytest

from usef import vad

SR = 8000


def _burst(seconds: float, seed: int) -> np.ndarray:
    # flat-envelope harmonic tone: its edges are exactly where the burst starts and stops
    t = np.arange(round(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    return (0.1 * sum(np.sin(2 * np.pi * k * 150.0 * t + rng.uniform(0, 6)) / k for k in range(1, 6))).astype(np.float32)


def _quiet(seconds: float, seed: int) -> np.ndarray:
    # room noise 60 dB below the bursts: not speech
    return (1e-4 * np.random.default_rng(seed).standard_normal(round(seconds * SR))).astype(np.float32)


def _clip() -> np.ndarray:
    # 1 s silence | 1.0 s speech | 0.3 s pause (kept) | 0.8 s speech | 1.5 s pause (cut) | 0.6 s speech | 1 s silence
    parts = [_quiet(1.0, 0), _burst(1.0, 1), _quiet(0.3, 2), _burst(0.8, 3), _quiet(1.5, 4), _burst(0.6, 5),
             _quiet(1.0, 6)]
    return np.concatenate(parts)


def test_trim_cuts_silence_and_long_pauses_to_margins():
    wave = _clip()
    margin = vad.MARGIN_SECONDS
    regions = vad.speech_regions(wave, SR)
    # two regions: the first two bursts with their short pause, and the last burst; each +- margin
    expected = [(1.0 - margin, 3.1 + margin), (4.6 - margin, 5.2 + margin)]
    assert len(regions) == 2
    for (start, end), (want_start, want_end) in zip(regions, expected):
        assert abs(start - round(want_start * SR)) <= SR * vad.FRAME_SECONDS
        assert abs(end - round(want_end * SR)) <= SR * vad.FRAME_SECONDS
    trimmed = vad.trim(wave, SR)
    want = round((2.1 + 0.6 + 4 * margin) * SR)
    assert abs(trimmed.shape[0] - want) <= 2 * SR * vad.FRAME_SECONDS
    np.testing.assert_array_equal(trimmed[: 1000], wave[regions[0][0] : regions[0][0] + 1000])


def test_short_pauses_are_kept():
    wave = np.concatenate([_burst(1.0, 1), _quiet(0.4, 2), _burst(1.0, 3)])
    assert vad.speech_regions(wave, SR) == [(0, wave.shape[0])]
    assert vad.trim(wave, SR) is wave


def test_never_empty():
    silent = np.zeros(SR, dtype=np.float32)
    assert vad.speech_regions(silent, SR) == []
    assert vad.trim(silent, SR) is silent
    noise = _quiet(1.0, 0)  # nothing louder than the rest: all of it is kept
    assert vad.trim(noise, SR).shape == noise.shape


def test_clicks_are_not_speech():
    wave = np.concatenate([_quiet(1.0, 0), _burst(0.02, 1), _quiet(1.0, 2), _burst(1.0, 3), _quiet(1.0, 4)])
    (start, end), = vad.speech_regions(wave, SR)
    assert abs(start - round((2.02 - vad.MARGIN_SECONDS) * SR)) <= SR * vad.FRAME_SECONDS
    assert abs(end - round((3.02 + vad.MARGIN_SECONDS) * SR)) <= SR * vad.FRAME_SECONDS


def test_bad_method_and_missing_silero():
    with pytest.raises(ValueError, match="vad"):
        vad.trim(_clip(), SR, method="webrtc")
    if "silero" not in vad.available_methods():
        with pytest.raises(ImportError, match="silero"):
            vad.trim(_clip(), SR, method="silero")
    assert "energy" in vad.available_methods()
