"""Rendering one planned example (:class:`usef.data.mix_recipe.MixPlan`) into audio.

Planning (:mod:`usef.data.dynamic_mix`) draws every choice but the rooms' noise; this module
turns the choices into signals: speed perturbation, synthetic rooms, interferers at the SIR,
noise at the SNR, the mixture's and the reference's levels, the reference's EQ. The RIRs draw
from ``rng`` in a fixed order (target, interferers, reference), so an example is a function of
its plan and the generator's state after planning.
"""

from __future__ import annotations

import math

import numpy as np

from usef.data.augment import convolve, equalize, power, speed_perturb, synthetic_rir
from usef.data.mix_recipe import Crop, DynamicMixConfig, MixPlan
from usef.data.pack import NoiseCorpus, SpeakerCorpus

__all__ = ["render_example"]

_PEAK = 0.99


def crop_audio(speech: SpeakerCorpus, crop: Crop, length: int | None = None) -> np.ndarray:
    """The crop's samples, sped up by its factor and placed at its offset in ``length`` samples
    (default: the sped-up crop's own length). Shape: (length,)."""
    x = speech.load(crop.speaker, crop.utterance)[crop.start : crop.stop]
    y = speed_perturb(x, crop.factor)
    n = len(y) if length is None else length
    out = np.zeros(n)
    out[crop.offset : crop.offset + len(y)] = y[: n - crop.offset]
    return out


def noise_segment(noise: NoiseCorpus, index: int, start: int, seg: int) -> np.ndarray:
    """``seg`` samples of noise clip ``index`` from ``start``; short clips loop. Shape: (seg,)."""
    clip = np.asarray(noise.load(index), dtype=np.float64)
    reps = math.ceil((start + seg) / max(1, len(clip)))
    return np.tile(clip, reps)[start : start + seg]


def reverberate(rng: np.random.Generator, x: np.ndarray, rt60: float | None, sample_rate: int,
                early_reverb_ms: float) -> tuple[np.ndarray, np.ndarray]:
    """(reverberant, direct + early) versions of ``x`` in one synthetic room (``x`` twice if dry)."""
    if rt60 is None:
        return x, x
    rir = synthetic_rir(rng, rt60, sample_rate, drr_db=float(rng.uniform(0.0, 10.0)))
    early = np.zeros_like(rir)
    n_early = max(1, round(early_reverb_ms / 1000.0 * sample_rate))
    early[:n_early] = rir[:n_early]
    return convolve(x, rir, early)


def _scale_to(x: np.ndarray, gain_dbfs: float) -> float:
    """The factor that brings ``x`` to ``gain_dbfs`` RMS, lowered if its peak would pass 0.99."""
    scale = 10 ** (gain_dbfs / 20) / math.sqrt(max(power(x), 1e-20))
    return min(scale, _PEAK / max(float(np.max(np.abs(x))), 1e-20))


def render_example(plan: MixPlan, rng: np.random.Generator, speech: SpeakerCorpus, noise: NoiseCorpus | None,
                   config: DynamicMixConfig) -> dict:
    """The example dict of :class:`usef.data.dynamic_mix.DynamicMixDataset` for ``plan``.

    Shape: ``mixture``, ``target``, ``interferer``, ``noise`` (T,) with T the segment's samples;
    ``reference`` (T_ref,); all float32.
    """
    rate = speech.sample_rate
    seg = round(config.segment_seconds * rate)

    def room(x: np.ndarray, rt60: float | None) -> tuple[np.ndarray, np.ndarray]:
        return reverberate(rng, x, rt60, rate, config.early_reverb_ms)

    target_mix, target = room(crop_audio(speech, plan.target, seg), plan.rt60)
    if plan.target_absent:
        target_mix, target = np.zeros(seg), np.zeros(seg)
    interferer = np.zeros(seg)
    for crop in plan.interferers:
        x = room(crop_audio(speech, crop, seg), plan.rt60)[0]
        interferer += x / math.sqrt(max(power(x), 1e-20))  # equal power per talker
    p_int = power(interferer)
    if p_int > 0 and not plan.target_absent:
        interferer *= math.sqrt(power(target) / p_int / 10 ** (plan.sir_db / 10))
    speech_sum = target_mix + interferer
    noise_part = np.zeros(seg)
    if plan.noise is not None:
        i, start, snr = plan.noise
        noise_part = noise_segment(noise, i, start, seg)
        if power(noise_part) > 0:
            noise_part *= math.sqrt(power(speech_sum) / power(noise_part) / 10 ** (snr / 10))
    mixture = speech_sum + noise_part
    scale = _scale_to(mixture, plan.gain_dbfs)
    reference = room(crop_audio(speech, plan.reference, plan.reference_samples), plan.reference_rt60)[0]
    if plan.reference_eq_db is not None:
        reference = equalize(reference, plan.reference_eq_db)
    ref_scale = _scale_to(reference, plan.reference_gain_dbfs)
    f32 = np.float32
    return {
        "mixture": (mixture * scale).astype(f32), "target": (target * scale).astype(f32),
        "reference": (reference * ref_scale).astype(f32),
        "interferer": (interferer * scale).astype(f32), "noise": (noise_part * scale).astype(f32),
        "speaker": plan.target.speaker,
    }
