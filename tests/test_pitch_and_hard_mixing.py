"""Pitch tracking and the hard-case options of dynamic mixing (similar interferers, reference EQ)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from usef.data import DynamicMixDataset, SpeakerCorpus
from usef.data.augment import equalize
from usef.data.pitch import f0_distance_semitones, median_f0, speaker_median_f0

SR = 8000


def _voice(f0: float, seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """Harmonic voice gliding +-3 % around ``f0``, with pauses and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.03 * np.sin(2 * np.pi * 0.5 * t))) / SR
    wave = sum(np.sin(k * phase) / k for k in range(1, 10) if k * f0 < 3500)
    wave *= (np.sin(2 * np.pi * 2.0 * t) > -0.5)  # silent gaps: unvoiced frames
    return (0.2 * wave + 0.002 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize("f0", [85.0, 120.0, 210.0, 320.0])
def test_median_f0_known_answer(f0):
    assert median_f0(_voice(f0), SR) == pytest.approx(f0, rel=0.03)


def test_median_f0_of_noise_and_silence_is_nan_or_unvoiced():
    assert math.isnan(median_f0(np.zeros(SR), SR))
    assert math.isnan(median_f0(np.zeros(10), SR))  # shorter than a frame
    noise = np.random.default_rng(0).standard_normal(2 * SR)
    assert math.isnan(median_f0(noise, SR))
    with pytest.raises(ValueError, match="fmin"):
        median_f0(noise, SR, fmin=500.0, fmax=400.0)
    assert f0_distance_semitones(100.0, 200.0) == pytest.approx(12.0)
    assert math.isnan(f0_distance_semitones(float("nan"), 200.0))


def _pitched_corpus() -> SpeakerCorpus:
    f0s = {"low1": 95.0, "low2": 100.0, "low3": 110.0, "high1": 200.0, "high2": 215.0, "high3": 230.0}
    return SpeakerCorpus.from_arrays({s: [_voice(f, 8.0, seed=i)] for i, (s, f) in enumerate(f0s.items())}, SR)


def test_similar_interferer_is_drawn_among_the_closest_pitches():
    corpus = _pitched_corpus()
    f0 = speaker_median_f0(corpus)
    assert f0["low1"] < f0["low3"] < f0["high1"] < f0["high3"]
    hard = DynamicMixDataset(corpus, p_similar_interferer=1.0, similar_pool=2, seed=3)
    easy = DynamicMixDataset(corpus, seed=3)
    same_group = {True: 0, False: 0}
    for i in range(60):
        plan = hard.plan(i)
        target, other = plan.target.speaker, plan.interferers[0].speaker
        assert other != target
        assert target[:3] == other[:3]  # the 2 closest of 3 in a group are in that group
        same_group[easy.plan(i).target.speaker[:3] == easy.plan(i).interferers[0].speaker[:3]] += 1
    assert same_group[False] > 15  # random interferers cross the groups often


def test_reference_eq_changes_the_spectrum_not_the_plan_stream():
    corpus = _pitched_corpus()
    plain = DynamicMixDataset(corpus, seed=5)
    eq = DynamicMixDataset(corpus, p_reference_eq=1.0, reference_eq_db=6.0, seed=5)
    plan = eq.plan(0)
    assert plan.reference_eq_db is not None and len(plan.reference_eq_db) == 6
    assert all(abs(g) <= 6.0 for g in plan.reference_eq_db)
    assert plain.plan(0).reference_eq_db is None
    # off by default: existing seeded streams are unchanged (no extra draws)
    assert DynamicMixDataset(corpus, seed=5, p_reference_eq=0.0).plan(7) == plain.plan(7)


def test_equalize_known_answers():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(4096)
    np.testing.assert_allclose(equalize(x, [0.0, 0.0, 0.0]), x, atol=1e-9)
    np.testing.assert_allclose(equalize(x, [6.0, 6.0]), x * 10 ** (6 / 20), rtol=1e-9)
    tilted = equalize(x, [-12.0, 0.0, 12.0])
    spec_in, spec_out = np.abs(np.fft.rfft(x)), np.abs(np.fft.rfft(tilted))
    low, high = slice(1, 20), slice(-200, None)
    assert np.mean(spec_out[low] / spec_in[low]) < 0.3
    assert np.mean(spec_out[high] / spec_in[high]) > 3.0
    with pytest.raises(ValueError, match="at least 2"):
        equalize(x, [1.0])
