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

This module plans (draws every choice of an example into a :class:`MixPlan`);
:mod:`usef.data.mix_render` renders a plan into audio; :mod:`usef.data.mix_recipe` holds the
recipe and plan types.

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

import math
import os
from dataclasses import replace
from typing import TYPE_CHECKING, Union

import numpy as np
from torch.utils.data import Dataset

from usef.data.augment import (
    output_length,
    source_length,
    speed_perturb,
    synthetic_rir,
)
from usef.data.mix_recipe import Crop, DynamicMixConfig, MixPlan
from usef.data.mix_render import render_example
from usef.data.pack import NoiseCorpus, SpeakerCorpus
from usef.data.pitch import speaker_median_f0
from usef.data.splits import (  # re-exported: dev sets of mixes
    make_fixed_examples,
    write_eval_set,
)

if TYPE_CHECKING:
    from usef.embeddings.dvector import DVectorTable

PathLike = Union[str, os.PathLike]  # noqa: UP007 (runtime alias: keep Python 3.9)
_MAX_TRIES = 100
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
        example = render_example(plan, rng, self.speech, self.noise, self.config)
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
