"""The mixing recipe (:class:`DynamicMixConfig`) and the random choices of one example
(:class:`MixPlan` of :class:`Crop` s): plain data, shared by planning
(:mod:`usef.data.dynamic_mix`) and rendering (:mod:`usef.data.mix_render`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Crop", "DynamicMixConfig", "MixPlan"]


@dataclass(frozen=True)
class DynamicMixConfig:
    """Mixing recipe. Ranges are (low, high), drawn uniformly; seconds and dB."""

    segment_seconds: float = 3.0
    reference_seconds: tuple[float, float] = (2.0, 4.0)
    min_reference_seconds: float = 1.0
    min_target_seconds: float = 1.0
    interferer_probs: tuple[float, ...] = (1.0, 0.0)  # P(1 interferer), P(2), ...
    sir_range: tuple[float, float] = (-5.0, 5.0)  # target vs the sum of interferers
    gain_dbfs_range: tuple[float, float] = (-25.0, -5.0)  # mixture RMS, then peak <= 0.99
    p_noise: float = 1.0  # used only when a noise corpus is given
    snr_range: tuple[float, float] = (0.0, 20.0)  # speech (target + interferers) vs noise
    p_speed: float = 0.0
    speed_range: tuple[float, float] = (0.9, 1.1)
    p_reverb: float = 0.0
    rt60_range: tuple[float, float] = (0.2, 0.6)
    early_reverb_ms: float = 50.0
    # hard cases: the first interferer is, with this probability, one of the
    # ``similar_pool`` speakers whose median F0 is closest to the target's
    p_similar_interferer: float = 0.0
    similar_pool: int = 8
    # channel mismatch: the reference gets a random smooth EQ of +-reference_eq_db
    p_reference_eq: float = 0.0
    reference_eq_db: float = 6.0
    # target absent (USEF-TP style): with this probability the target does not speak in the
    # mixture (interferers and noise only) and the training target is silence. Drawn from its
    # own RNG stream, so the other examples are the same as with 0.0
    p_target_absent: float = 0.0
    # examples ``index // reference_length_group`` share one reference length (drawn from a
    # stream of their own; every other choice is the one of group 1). With the trainer's step
    # sampler and the group equal to the batch size a batch is padded only where a short
    # recording clipped a reference, and then to the group's length, not the longest of 2-4 s
    # draws (measured 8 % off a two-thread training step)
    reference_length_group: int = 1
    length: int = 10_000_000
    seed: int = 0
    rank: int = 0
    epoch: int = 0

    def __post_init__(self) -> None:
        for name in ("reference_seconds", "sir_range", "gain_dbfs_range", "snr_range", "speed_range", "rt60_range"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name} must be (low, high) with low <= high, got {(lo, hi)}")
        for name in ("p_noise", "p_speed", "p_reverb", "p_similar_interferer", "p_reference_eq",
                     "p_target_absent"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        probs = np.asarray(self.interferer_probs, dtype=float)
        if probs.size == 0 or np.any(probs < 0) or abs(probs.sum() - 1.0) > 1e-6:
            raise ValueError(f"interferer_probs must be >= 0 and sum to 1, got {self.interferer_probs}")
        if self.speed_range[0] <= 0 or self.rt60_range[0] <= 0:
            raise ValueError("speed_range and rt60_range must be positive")
        if not 0 < self.min_reference_seconds <= self.reference_seconds[0]:
            raise ValueError("min_reference_seconds must be in (0, reference_seconds[0]]")
        if self.similar_pool < 1 or self.reference_eq_db < 0:
            raise ValueError("similar_pool must be >= 1 and reference_eq_db >= 0")
        if not isinstance(self.reference_length_group, int) or self.reference_length_group < 1:
            raise ValueError(f"reference_length_group must be an integer >= 1, got {self.reference_length_group!r}")
        if self.segment_seconds <= 0 or self.min_target_seconds <= 0 or self.length <= 0:
            raise ValueError("segment_seconds, min_target_seconds and length must be > 0")
        if min(self.seed, self.rank, self.epoch) < 0:
            raise ValueError("seed, rank and epoch must be >= 0")


@dataclass(frozen=True)
class Crop:
    """Source samples [start, stop) of one utterance, sped up by ``factor`` and placed
    at ``offset`` in the output (zeros elsewhere)."""

    speaker: str
    utterance: int
    start: int
    stop: int
    factor: float
    offset: int = 0


@dataclass(frozen=True)
class MixPlan:
    """Every random choice of one example except the RIR noise."""

    target: Crop
    reference: Crop
    interferers: tuple[Crop, ...]
    sir_db: float
    gain_dbfs: float
    reference_gain_dbfs: float
    noise: tuple[int, int, float] | None  # (clip index, start, snr_db)
    rt60: float | None
    reference_rt60: float | None
    reference_eq_db: tuple[float, ...] | None = None  # gains of :func:`equalize`
    target_absent: bool = False  # the target crop then only says whose reference it is
    reference_samples: int | None = None  # rendered length, when a group fixed it (else the crop's)
