"""Seeded on-the-fly mixing of target-speaker examples from speaker/noise corpora.

Reproducibility: example ``index`` is generated from
``numpy.random.default_rng([seed, rank, epoch, index])`` and nothing else, so
``dataset[i]`` is the same in any DataLoader worker, in any order, after any
restart (exact resume), while DDP ranks given different ``rank`` values draw
different streams. The dataset is map-style with a large ``length``: iterate it in
order, e.g. ``DataLoader(ds, batch_size=B, sampler=range(step * B, len(ds)))`` to
resume at ``step``; examples are random already, so no shuffling is needed.

Reverberation, when enabled, convolves every source with its own synthetic RIR
(exponentially decaying noise, one RT60 per example). The mixture holds the fully
reverberant sources; ``target`` is the direct path plus early reflections (the first
``early_reverb_ms`` of its RIR), so with reverberation the mixture also holds the
target's late tail: ``mixture - target - interferer - noise`` is that tail (zero
without reverberation). The SIR is measured on ``target`` as returned.

Speed perturbation resamples a whole talker (target and its reference share one
factor, making a pseudo-speaker) with a NumPy FFT resampler: no soxr or scipy.

References come from another utterance of the target speaker when there is one
(a reference from a short utterance may then fall below ``min_reference_seconds``);
for a speaker with one recording, from a region of it disjoint from the target's.

With a d-vector table attached (``dvectors=``, :class:`usef.embeddings.DVectorTable`) every
example also holds ``embedding``, the vector of the reference's *source* crop (dry, before
reverberation and gain); the target talker is then never speed-perturbed (a table holds
vectors of the recorded voices, not of pseudo-speakers; interferers still are). For a speaker
with one recording no grid window that overlaps the target crop is used: the reference region
is then at least one window plus one hop long, and a draw whose reference has no such window
left is redrawn.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Union

import numpy as np
from torch.utils.data import Dataset

from usef.data.augment import (
    convolve,
    equalize,
    output_length,
    power,
    source_length,
    speed_perturb,
    synthetic_rir,
)
from usef.data.pack import NoiseCorpus, SpeakerCorpus
from usef.data.pitch import speaker_median_f0
from usef.data.splits import (  # re-exported: dev sets of mixes
    make_fixed_examples,
    write_eval_set,
)

if TYPE_CHECKING:
    from usef.embeddings.dvector import DVectorTable

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]  # noqa: UP007 (runtime alias: keep Python 3.9)
_MAX_TRIES = 100
_PEAK = 0.99
_EQ_BANDS = 6

__all__ = [
    "Crop",
    "DynamicMixConfig",
    "DynamicMixDataset",
    "MixPlan",
    "NoiseCorpus",
    "SpeakerCorpus",
    "make_fixed_examples",
    "speed_perturb",
    "synthetic_rir",
    "write_eval_set",
]


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


class DynamicMixDataset(Dataset):
    """Map-style dataset: ``ds[i]`` is a freshly mixed, fully seeded example dict.

    Keys: ``mixture``, ``target``, ``interferer``, ``noise`` float32 (T,);
    ``reference`` float32 (T_ref,); ``speaker`` str (the target's id); with ``dvectors``
    also ``embedding`` float32 (E,); with ``p_target_absent > 0`` also ``target_present`` int
    (0: the target does not speak, ``target`` is all zeros and the SIR is not applied).
    Change ``sir_range`` (or :meth:`with_config`) between epochs for a curriculum;
    workers pick the change up when the DataLoader iterator is recreated.
    """

    def __init__(self, speech: SpeakerCorpus, noise: NoiseCorpus | None = None,
                 config: DynamicMixConfig | None = None, *, dvectors: DVectorTable | None = None,
                 **overrides) -> None:
        self.config = replace(config or DynamicMixConfig(), **overrides)
        n_int = max(i + 1 for i, p in enumerate(self.config.interferer_probs) if p > 0)
        if len(speech.speakers) < 1 + n_int:
            raise ValueError(f"speech must hold at least {1 + n_int} speakers, got {len(speech.speakers)}")
        if noise is not None and (len(noise) == 0 or noise.sample_rate != speech.sample_rate):
            raise ValueError("noise must be a non-empty corpus at the speech sample rate")
        self.speech, self.noise = speech, noise
        self.sample_rate = speech.sample_rate
        if dvectors is not None:
            dvectors.check_corpus(speech)
        self.dvectors = dvectors
        self._pitch_order: dict[str, list[int]] | None = None

    def _similar_order(self) -> dict[str, list[int]]:
        """For each speaker, the indices of the others sorted by median-F0 distance."""
        if self._pitch_order is None:
            f0 = speaker_median_f0(self.speech)
            speakers = self.speech.speakers
            logf = np.array([math.log2(f0[s]) if f0[s] > 0 else np.nan for s in speakers])
            order = {}
            for i, spk in enumerate(speakers):
                dist = np.abs(logf - logf[i])
                dist[np.isnan(dist)] = np.inf
                dist[i] = np.nan  # never the target itself (sorted last, then dropped)
                order[spk] = [int(j) for j in np.argsort(dist) if j != i]
            self._pitch_order = order
        return self._pitch_order

    @property
    def sir_range(self) -> tuple[float, float]:
        return self.config.sir_range

    @sir_range.setter
    def sir_range(self, value: tuple[float, float]) -> None:
        self.config = replace(self.config, sir_range=tuple(value))

    def with_config(self, **changes) -> DynamicMixDataset:
        """A dataset sharing these corpora (and their caches) with config fields changed."""
        return DynamicMixDataset(self.speech, self.noise, replace(self.config, **changes), dvectors=self.dvectors)

    def __len__(self) -> int:
        return self.config.length

    def _rng(self, index: int) -> np.random.Generator:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range [0, {len(self)})")
        c = self.config
        return np.random.default_rng([c.seed, c.rank, c.epoch, int(index)])

    def __getitem__(self, index: int) -> dict:
        return self.example(index)

    def example(self, index: int, **plan_changes) -> dict:
        """``self[index]``, or with fields of its :class:`MixPlan` replaced: the same talkers,
        crops and levels with one factor taken away (``noise=None``, ``rt60=None`` for a dry
        mixture, ``reference_rt60=None`` for a dry reference), for paired diagnostics."""
        rng = self._rng(index)
        plan = self._plan(rng, index)
        if plan_changes:
            plan = replace(plan, **plan_changes)
        example = self._render(plan, rng)
        if self.dvectors is not None:
            example["embedding"] = self._reference_vector(plan.target, plan.reference)
        if self.config.p_target_absent > 0:
            example["target_present"] = int(not plan.target_absent)
        return example

    def plan(self, index: int) -> MixPlan:
        """The random choices behind ``self[index]`` (for inspection and tests)."""
        return self._plan(self._rng(index), index)

    # -- planning -----------------------------------------------------------
    def _seconds(self, s: float) -> int:
        return round(s * self.sample_rate)

    def _factor(self, rng: np.random.Generator) -> float:
        c = self.config
        return float(rng.uniform(*c.speed_range)) if rng.random() < c.p_speed else 1.0

    def _segment_crop(self, rng, speaker: str, k: int, factor: float, seg: int, region=None) -> Crop:
        """Random crop for a ``seg``-sample output inside ``region`` (default: whole utterance)."""
        lo, hi = region or (0, len(self.speech.load(speaker, k)))
        need = min(source_length(seg, factor), hi - lo)
        start = lo + int(rng.integers(0, hi - lo - need + 1))
        offset = int(rng.integers(0, max(0, seg - output_length(need, factor)) + 1))
        return Crop(speaker, k, start, start + need, factor, offset)

    def _group_reference_samples(self, index: int) -> int | None:
        """The reference length shared by ``index``'s group (None without groups)."""
        c = self.config
        if c.reference_length_group == 1:
            return None
        group = int(index) // c.reference_length_group
        return self._seconds(np.random.default_rng([c.seed, c.rank, c.epoch, group, 2]).uniform(*c.reference_seconds))

    def _target_and_reference(self, rng, speaker: str, factor: float,
                              reference_samples: int | None = None) -> tuple[Crop, Crop] | None:
        c = self.config
        seg = self._seconds(c.segment_seconds)
        drawn = self._seconds(rng.uniform(*c.reference_seconds))  # drawn always: the stream stays that of group 1
        ref_src = source_length(drawn if reference_samples is None else reference_samples, factor)
        n_utt = self.speech.num_utterances(speaker)
        k = int(rng.integers(n_utt))
        if n_utt > 1:
            j = int(rng.integers(n_utt - 1))
            j += j >= k  # any utterance but k
            target = self._segment_crop(rng, speaker, k, factor, seg)
            n_ref = len(self.speech.load(speaker, j))
            take = min(ref_src, n_ref)
            start = int(rng.integers(0, n_ref - take + 1))
            return target, Crop(speaker, j, start, start + take, factor)
        # one recording: target and reference come from disjoint regions of it
        n = len(self.speech.load(speaker, k))
        min_ref = source_length(self._seconds(c.min_reference_seconds), factor)
        if self.dvectors is not None:  # leave room for a whole grid window clear of the target
            min_ref = max(min_ref, self._seconds(self.dvectors.window_seconds + self.dvectors.hop_seconds))
        if n - min_ref < source_length(self._seconds(c.min_target_seconds), factor):
            return None
        tgt_len = min(source_length(seg, factor), n - min_ref)
        ref_len = min(ref_src, n - tgt_len)
        slack = n - tgt_len - ref_len
        first = int(rng.integers(0, slack + 1))
        second = first + int(rng.integers(0, slack - first + 1))
        if rng.random() < 0.5:
            tgt_region, ref_start = (first, first + tgt_len), second + tgt_len
        else:
            tgt_region, ref_start = (second + ref_len, second + ref_len + tgt_len), first
        target = self._segment_crop(rng, speaker, k, factor, seg, tgt_region)
        return target, Crop(speaker, k, ref_start, ref_start + ref_len, factor)

    def _absent(self, index: int) -> bool:
        c = self.config
        if c.p_target_absent <= 0:
            return False
        # a stream of its own: switching absent targets on leaves every other draw as it was
        return bool(np.random.default_rng([c.seed, c.rank, c.epoch, int(index), 1]).random() < c.p_target_absent)

    def _plan(self, rng: np.random.Generator, index: int) -> MixPlan:
        c = self.config
        speakers = self.speech.speakers
        seg = self._seconds(c.segment_seconds)
        shared = self._group_reference_samples(index)
        for _ in range(_MAX_TRIES):
            t_idx = int(rng.integers(len(speakers)))
            factor = self._factor(rng)
            pair = self._target_and_reference(rng, speakers[t_idx], 1.0 if self.dvectors is not None else factor,
                                              shared)
            if pair is not None and (self.dvectors is None or self._reference_vector(*pair) is not None):
                break
        else:
            raise ValueError("speech: no speaker found whose recordings fit a target and a reference"
                             + (" with a d-vector window clear of the target" if self.dvectors is not None else "")
                             + "; lower min_target_seconds/min_reference_seconds or add longer recordings")
        probs = np.asarray(c.interferer_probs) / sum(c.interferer_probs)
        n_int = 1 + int(rng.choice(len(probs), p=probs))
        others = [int(o) + int(o >= t_idx) for o in rng.choice(len(speakers) - 1, size=n_int, replace=False)]
        if c.p_similar_interferer > 0 and rng.random() < c.p_similar_interferer:
            pool = self._similar_order()[speakers[t_idx]][: c.similar_pool]
            first = pool[int(rng.integers(len(pool)))]
            others = [first] + [o for o in others if o != first][: n_int - 1]
        interferers = []
        for o in others:
            spk = speakers[o]
            k = int(rng.integers(self.speech.num_utterances(spk)))
            interferers.append(self._segment_crop(rng, spk, k, self._factor(rng), seg))
        noise = None
        if self.noise is not None and rng.random() < c.p_noise:
            i = int(rng.integers(len(self.noise)))
            start = int(rng.integers(0, max(1, len(self.noise.load(i)) - seg + 1)))
            noise = (i, start, float(rng.uniform(*c.snr_range)))
        rt60 = float(rng.uniform(*c.rt60_range)) if rng.random() < c.p_reverb else None
        ref_rt60 = float(rng.uniform(*c.rt60_range)) if rng.random() < c.p_reverb else None
        eq = None
        if c.p_reference_eq > 0 and rng.random() < c.p_reference_eq:
            eq = tuple(float(g) for g in rng.uniform(-c.reference_eq_db, c.reference_eq_db, _EQ_BANDS))
        return MixPlan(pair[0], pair[1], tuple(interferers), float(rng.uniform(*c.sir_range)),
                       float(rng.uniform(*c.gain_dbfs_range)), float(rng.uniform(*c.gain_dbfs_range)),
                       noise, rt60, ref_rt60, eq, self._absent(index), self._fixed_length(pair[1], shared))

    @staticmethod
    def _fixed_length(reference: Crop, shared: int | None) -> int | None:
        """``shared`` unless a short recording clipped the crop: speed perturbation rounds a
        crop's output length by a sample either way, and the group's batch must not pad."""
        if shared is None or reference.stop - reference.start < source_length(shared, reference.factor):
            return None
        return shared

    def _reference_vector(self, target: Crop, reference: Crop) -> np.ndarray | None:
        """The table's vector of the reference's source crop, never using a window that
        overlaps the target crop of the same recording (None when no window is left)."""
        row = self.dvectors.index(reference.speaker, reference.utterance)
        self.dvectors.check_length(row, len(self.speech.load(reference.speaker, reference.utterance)),
                                   self.sample_rate)
        same = (target.speaker, target.utterance) == (reference.speaker, reference.utterance)
        try:
            return self.dvectors.vector(row, reference.start, reference.stop, self.sample_rate,
                                        forbid=(target.start, target.stop) if same else None)
        except LookupError:
            return None

    # -- rendering ----------------------------------------------------------
    def _audio(self, crop: Crop, length: int | None = None) -> np.ndarray:
        x = self.speech.load(crop.speaker, crop.utterance)[crop.start : crop.stop]
        y = speed_perturb(x, crop.factor)
        n = len(y) if length is None else length
        out = np.zeros(n)
        out[crop.offset : crop.offset + len(y)] = y[: n - crop.offset]
        return out

    def _noise(self, index: int, start: int, seg: int) -> np.ndarray:
        clip = np.asarray(self.noise.load(index), dtype=np.float64)
        reps = math.ceil((start + seg) / max(1, len(clip)))
        return np.tile(clip, reps)[start : start + seg]  # short clips loop

    def _reverb(self, rng, x: np.ndarray, rt60: float | None) -> tuple[np.ndarray, np.ndarray]:
        """(reverberant, direct + early) versions of ``x``."""
        if rt60 is None:
            return x, x
        rir = synthetic_rir(rng, rt60, self.sample_rate, drr_db=float(rng.uniform(0.0, 10.0)))
        early = np.zeros_like(rir)
        n_early = max(1, self._seconds(self.config.early_reverb_ms / 1000.0))
        early[:n_early] = rir[:n_early]
        return convolve(x, rir, early)

    def _render(self, plan: MixPlan, rng: np.random.Generator) -> dict:
        seg = self._seconds(self.config.segment_seconds)
        target_mix, target = self._reverb(rng, self._audio(plan.target, seg), plan.rt60)
        if plan.target_absent:
            target_mix, target = np.zeros(seg), np.zeros(seg)
        interferer = np.zeros(seg)
        for crop in plan.interferers:
            x = self._reverb(rng, self._audio(crop, seg), plan.rt60)[0]
            interferer += x / math.sqrt(max(power(x), 1e-20))  # equal power per talker
        p_int = power(interferer)
        if p_int > 0 and not plan.target_absent:
            interferer *= math.sqrt(power(target) / p_int / 10 ** (plan.sir_db / 10))
        speech = target_mix + interferer
        noise = np.zeros(seg)
        if plan.noise is not None:
            i, start, snr = plan.noise
            noise = self._noise(i, start, seg)
            if power(noise) > 0:
                noise *= math.sqrt(power(speech) / power(noise) / 10 ** (snr / 10))
        mixture = speech + noise
        scale = 10 ** (plan.gain_dbfs / 20) / math.sqrt(max(power(mixture), 1e-20))
        scale = min(scale, _PEAK / max(float(np.max(np.abs(mixture))), 1e-20))
        reference = self._reverb(rng, self._audio(plan.reference, plan.reference_samples), plan.reference_rt60)[0]
        if plan.reference_eq_db is not None:
            reference = equalize(reference, plan.reference_eq_db)
        ref_scale = 10 ** (plan.reference_gain_dbfs / 20) / math.sqrt(max(power(reference), 1e-20))
        ref_scale = min(ref_scale, _PEAK / max(float(np.max(np.abs(reference))), 1e-20))
        f32 = np.float32
        return {
            "mixture": (mixture * scale).astype(f32), "target": (target * scale).astype(f32),
            "reference": (reference * ref_scale).astype(f32),
            "interferer": (interferer * scale).astype(f32), "noise": (noise * scale).astype(f32),
            "speaker": plan.target.speaker,
        }
