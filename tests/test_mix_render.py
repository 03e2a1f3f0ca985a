"""Rendering a hand-written plan (usef.data.mix_render): the levels and placements the plan
asks for, checked from the returned signals, independently of the planner."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from usef.data import NoiseCorpus, SpeakerCorpus
from usef.data.mix_recipe import Crop, DynamicMixConfig, MixPlan
from usef.data.mix_render import crop_audio, render_example

SR = 8000


def _tone(seconds: float, hz: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * hz * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def _db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(np.asarray(x, dtype=np.float64) ** 2))


@pytest.fixture
def corpora() -> tuple[SpeakerCorpus, NoiseCorpus]:
    speech = SpeakerCorpus.from_arrays({"a": [_tone(6.0, 220, 1)], "b": [_tone(6.0, 330, 2)]}, SR)
    noise = NoiseCorpus.from_arrays([np.random.default_rng(3).standard_normal(SR).astype(np.float32)], SR, ["hiss"])
    return speech, noise


def _plan(**changes) -> MixPlan:
    plan = MixPlan(target=Crop("a", 0, 0, 3 * SR, 1.0), reference=Crop("a", 0, 3 * SR, 5 * SR, 1.0),
                   interferers=(Crop("b", 0, SR, 3 * SR, 1.0, offset=SR),), sir_db=3.0, gain_dbfs=-20.0,
                   reference_gain_dbfs=-30.0, noise=(0, 100, 10.0), rt60=None, reference_rt60=None)
    return replace(plan, **changes)


def test_crop_audio_places_the_crop_at_its_offset(corpora):
    speech, _ = corpora
    source = speech.load("b", 0)
    out = crop_audio(speech, Crop("b", 0, 100, 100 + SR, 1.0, offset=500), 2 * SR)
    assert out.shape == (2 * SR,)
    assert np.all(out[:500] == 0) and np.all(out[500 + SR :] == 0)
    np.testing.assert_allclose(out[500 : 500 + SR], source[100 : 100 + SR], atol=1e-6)


def test_dry_render_has_the_planned_levels(corpora):
    speech, noise = corpora
    ex = render_example(_plan(), np.random.default_rng(0), speech, noise, DynamicMixConfig())
    assert ex["mixture"].shape == ex["target"].shape == (3 * SR,) and ex["reference"].shape == (2 * SR,)
    assert all(ex[k].dtype == np.float32 for k in ("mixture", "target", "reference", "interferer", "noise"))
    np.testing.assert_allclose(ex["mixture"], ex["target"] + ex["interferer"] + ex["noise"], atol=1e-6)
    assert _db(ex["target"]) - _db(ex["interferer"]) == pytest.approx(3.0, abs=0.01)
    assert _db(ex["target"] + ex["interferer"]) - _db(ex["noise"]) == pytest.approx(10.0, abs=0.01)
    assert _db(ex["mixture"]) == pytest.approx(-20.0, abs=0.01)
    assert _db(ex["reference"]) == pytest.approx(-30.0, abs=0.01)
    assert np.all(ex["interferer"][:SR] == 0)  # the interferer starts at its offset
    assert ex["speaker"] == "a"


def test_absent_target_and_fixed_reference_length(corpora):
    speech, noise = corpora
    ex = render_example(_plan(target_absent=True, noise=None, reference_samples=SR + 7),
                        np.random.default_rng(0), speech, noise, DynamicMixConfig())
    assert not ex["target"].any()
    np.testing.assert_allclose(ex["mixture"], ex["interferer"], atol=1e-6)
    assert ex["reference"].shape == (SR + 7,)


def test_rooms_draw_from_the_generator_and_keep_the_early_part_as_target(corpora):
    speech, noise = corpora
    plan = _plan(noise=None, rt60=0.5, reference_rt60=0.3)
    first = render_example(plan, np.random.default_rng(5), speech, noise, DynamicMixConfig())
    again = render_example(plan, np.random.default_rng(5), speech, noise, DynamicMixConfig())
    other = render_example(plan, np.random.default_rng(6), speech, noise, DynamicMixConfig())
    np.testing.assert_array_equal(first["mixture"], again["mixture"])
    assert not np.array_equal(first["mixture"], other["mixture"])
    tail = first["mixture"] - first["target"] - first["interferer"]  # the target's late reverberation
    assert np.abs(tail).max() > 1e-4 and _db(tail) < _db(first["target"])
