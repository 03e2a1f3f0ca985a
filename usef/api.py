"""Target speech extraction for users: ``usef.extract`` and ``usef.load_model``.

Inputs are coerced to mono float32 (channels averaged) at the model's rate (soxr), checked, run
through the model under ``torch.inference_mode()``; the estimate is resampled back to the mixture's
rate, cropped/padded to exactly the mixture's length and returned as the mixture's kind (NumPy for
arrays and paths, a tensor on the input's device and dtype for tensors).

Long mixtures (longer than ``chunk_seconds``, default 20 s) are cut into chunks of that length
overlapping by ``overlap`` (a fraction of a chunk, default 25%). Over each overlap the earlier chunk
fades out and the later one fades in with complementary raised-cosine (sin^2 / cos^2) weights that
sum to one, so estimates are added straight into the output array (no normalisation buffer). The
last chunk is aligned to the end of the mixture so every chunk has full context. The reference is
encoded once (``model.prepare_condition``) and reused; chunks run ``batch_size`` at a time, so
memory is the output array plus one chunk batch. References longer than ``max_reference_seconds``
(default 30 s) are cropped to their most energetic window of that length.

Models conditioned on a pre-computed speaker vector (``needs_reference`` False, e.g.
``dvector_conformer``) take ``embedding=``; given a reference instead, the vector is computed from
it (at the model's rate, as the training tables were) by the extractor's ``embedder``, by default
:class:`usef.embeddings.ResemblyzerEmbedder` (the optional ``resemblyzer`` extra).

Turning paths, arrays and tensors into waveforms, and the checks on rates and chunk lengths, live
in :mod:`usef.inputs`; this module re-exports them. The target speaker's side of
:class:`Extractor` (references, speaker vectors, enrollments: :meth:`Extractor.enroll`) is in
:mod:`usef.api_speaker`, which it inherits; lists of mixtures served by the bundled default of
each item's rate, in :mod:`usef.api_rates`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from usef import audio, audio_chunks, hub
from usef import confidence as confidence_module
from usef.api_rates import _rate, extract_by_rate
from usef.api_speaker import SpeakerInputs
from usef.enrollment import Enrollment
from usef.inputs import (  # noqa: F401 (the three limits and _is_path are only re-exported, for callers)
    MAX_SAMPLE_RATE,
    MIN_CHUNK_SECONDS,
    MIN_SAMPLE_RATE,
    AudioInput,
    _coerce,
    _is_path,
    _parameter_device,
    _Signal,
    check_chunk_seconds,
    check_sample_rate,
)

logger = logging.getLogger(__name__)

__all__ = ["Enrollment", "Extractor", "extract", "list_models", "load_model"]

DEFAULT_CHUNK_SECONDS = 20.0
DEFAULT_OVERLAP = 0.25
DEFAULT_MAX_REFERENCE_SECONDS = 30.0
# chunks per forward pass: None = by device. On this project's CPU, 5 minutes of audio ran
# 1.09x faster with one chunk at a time than with 4 (identical output; peak RSS 0.48 vs
# 0.67 GB); a GPU wants the batch.
DEFAULT_BATCH_SIZE = None
_BATCH_SIZE_BY_DEVICE = {"cpu": 1, "cuda": 4}
# the model passes' arithmetic: "bf16" runs them under torch.autocast (bfloat16), on CPUs with
# AVX-512 BF16 / AMX about 1.4x faster for long inputs at the same SI-SDR (README, Speed)
PRECISIONS = ("fp32", "bf16")
LEVELS = audio.LEVELS
_FULL_SCALE = 0.999
# torch.stft(center=True) needs more than n_fft/2 samples; shorter mixtures are zero-padded.
_MIN_MIXTURE_SECONDS = 0.1

list_models = hub.list_models


_chunk_starts = audio.chunk_starts  # kept for callers of the old private name


def check_shifts(shifts: Any, model: torch.nn.Module) -> int:
    """``shifts`` (frame-grid offsets averaged, :meth:`TargetSpeakerExtractor.extract`) if it is an
    integer in ``1..hop_length`` of ``model``; raises ValueError otherwise."""
    if isinstance(shifts, np.integer):
        shifts = int(shifts)
    audio_chunks.grid_offsets(model.stft.hop_length if hasattr(model, "stft") else 1, shifts)
    return shifts


class Extractor(SpeakerInputs):
    """A loaded model that extracts repeatedly without reloading.

    Args:
        model: a ``TargetSpeakerExtractor`` (see docs/architecture.md).
        name: display name (the model folder name for loaded models).
        device: move the model there; default: where its parameters are.
        chunk_seconds: mixtures longer than this are processed in chunks.
        overlap: overlap of consecutive chunks as a fraction of a chunk, in [0, 0.5].
        max_reference_seconds: longer references are cropped to their most energetic window.
        batch_size: chunks (or equal-length mixtures of a list) per forward pass; default
            1 on CPU (fastest and leanest there), 4 on CUDA.
        level: ``"auto"`` (default): ``"mixture"`` for models trained with a scale-invariant
            loss, the model's own level moved at most 3 dB towards that fit (and kept within
            full scale) for models whose checkpoint says ``output_level: calibrated``
            (:func:`usef.audio.resolve_level`, :func:`usef.audio.bounded_match_level`);
            ``"mixture"``: each estimate (each chunk of a long one) is scaled by the gain
            that fits it to its mixture (:func:`usef.audio.match_level`), i.e. to the level
            the target has there; ``"model"``: the model's raw output.
        embedder: for models that take a pre-computed speaker vector, a callable
            ``embedder(wave (T,), sample_rate) -> (E,)`` that makes it from a reference;
            default: :class:`usef.embeddings.ResemblyzerEmbedder`, created on first use.
        shifts: average the outputs of this many passes on STFT frame grids offset by a
            fraction of the hop (:meth:`TargetSpeakerExtractor.extract`), at ``shifts`` times
            the cost; default: the model card's choice (``shifts`` in its ``config.yaml``), else 1.
        precision: ``"fp32"`` (default) or ``"bf16"``: the model passes under bfloat16 autocast
            (``torch.autocast``; levels, confidence energies and everything after the model stay in
            float32). Faster where the hardware has bfloat16 arithmetic (CPUs with AVX-512 BF16 or
            AMX, recent GPUs), slower where it does not, and on a CPU each new input length first
            pays for its kernels: it pays off on long files (fixed-length chunks) and batches.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        name: str | None = None,
        device: None | str | torch.device = None,
        chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
        overlap: float = DEFAULT_OVERLAP,
        max_reference_seconds: float = DEFAULT_MAX_REFERENCE_SECONDS,
        batch_size: int | None = DEFAULT_BATCH_SIZE,
        embedder: Callable[[np.ndarray, int], np.ndarray] | None = None,
        level: str = "auto",
        shifts: int | None = None,
        precision: str = "fp32",
    ) -> None:
        rule = audio.resolve_level(level, getattr(model, "output_level", None))
        if precision not in PRECISIONS:
            raise ValueError(f"precision: must be one of {PRECISIONS}, got {precision!r}")
        if shifts is None:
            shifts = getattr(model, "inference_shifts", None) or 1  # the model card's choice
        shifts = check_shifts(shifts, model)
        if not 0.0 <= overlap <= 0.5:
            raise ValueError(f"overlap: must be within [0, 0.5], got {overlap}")
        check_chunk_seconds(chunk_seconds)
        if batch_size is None:
            batch_size = _BATCH_SIZE_BY_DEVICE.get(hub.resolve_device(device).type if device is not None
                                                   else _parameter_device(model).type, 4)
        if not (np.isfinite(max_reference_seconds) and max_reference_seconds > 0) or batch_size < 1:
            raise ValueError("max_reference_seconds and batch_size must be positive")
        if device is not None:
            model = model.to(hub.resolve_device(device))
        self.model = model.eval()
        self.name = name or getattr(model, "name", "") or type(model).__name__
        self.sample_rate = int(model.sample_rate)
        self.chunk_seconds = float(chunk_seconds)
        self.overlap = float(overlap)
        self.max_reference_seconds = float(max_reference_seconds)
        self.batch_size = int(batch_size)
        self.embedder = embedder
        self.level = rule  # "mixture" | "calibrated" | "model"
        self.shifts = shifts
        self.precision = precision

    @property
    def device(self) -> torch.device:
        return _parameter_device(self.model)

    def __repr__(self) -> str:
        return (f"Extractor(name={self.name!r}, sample_rate={self.sample_rate}, device={self.device}, "
                f"shifts={self.shifts}" + (f", precision={self.precision!r})" if self.precision != "fp32" else ")"))

    # -- input preparation (the reference's, embedding's, enrollment's: SpeakerInputs) ---
    def _mixture(self, x: AudioInput, sample_rate: int | None) -> _Signal:
        raw, rate, tensor = _coerce(x, "mixture", sample_rate)
        wave = audio.validate_waveform(raw, "mixture", rate)
        length = wave.shape[0]
        peak = float(np.max(np.abs(wave))) if wave.size else 0.0
        return _Signal(audio.resample(wave, rate, self.sample_rate), rate, length, tensor, peak)

    # -- model calls (the condition: SpeakerInputs._condition) ---------------------------
    def _forward(self, mixtures: np.ndarray, condition: Any, energy_sink: list | None = None,
                 shifts: int | None = None) -> np.ndarray:
        # (B, T_mix) at the model rate -> (B, T_mix); with energy_sink, the (B, 5) energies of
        # usef.confidence are appended to it (computed on the raw output, before any level rule)
        length = mixtures.shape[-1]
        minimum = int(_MIN_MIXTURE_SECONDS * self.sample_rate)
        if length < minimum:
            mixtures = np.pad(mixtures, ((0, 0), (0, minimum - length)))
        x = torch.from_numpy(mixtures).to(self.device)
        shifts = self.shifts if shifts is None else shifts
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            # the plain call when not averaging: a user's own model need not know about shifts
            raw = self.model.extract(x, condition, shifts=shifts) if shifts > 1 else self.model.extract(x, condition)
            raw = raw.float()
            if energy_sink is not None:
                energy_sink.append(confidence_module.energies(self.model, x, condition, raw))
        out = raw[:, :length].cpu().numpy()
        return audio.apply_level(out, mixtures[:, :length], self.level, self.sample_rate, _FULL_SCALE)

    def _chunked(self, wave: np.ndarray, condition: Any, chunk: int,
                 progress: Callable[[int, int], None] | None = None, energy_sink: list | None = None) -> np.ndarray:
        # (T_mix,) -> (T_mix,): chunk batches are cross-faded straight into one output array
        return audio.chunked_overlap_add(wave, chunk, self.overlap,
                                         lambda batch: self._forward(batch, condition, energy_sink),
                                         self.batch_size, progress)

    def confidence_map(self) -> confidence_module.ConfidenceMap:
        """The model's fitted confidence map (``confidence`` in its ``config.yaml``).

        Raises:
            ValueError: the model has none (fit one with ``tools/fit_confidence.py``).
        """
        data = getattr(self.model, "confidence_map", None)
        if data is None:
            scored = ", ".join(hub.models_with_confidence()) or "none installed"
            raise ValueError(f"return_confidence: model {self.name!r} has no fitted confidence map "
                             f"(config.yaml 'confidence'; tools/fit_confidence.py writes one); bundled models "
                             f"with one: {scored}")
        return confidence_module.ConfidenceMap.from_dict(data, f"model {self.name!r}")

    def _finish(self, estimate: np.ndarray, mix: _Signal):
        if not np.isfinite(estimate).all():
            logger.warning("%s produced NaN/Inf samples; replacing them with 0", self.name)
            estimate = np.nan_to_num(estimate, nan=0.0, posinf=0.0, neginf=0.0)
        estimate = audio.fit_length(audio.resample(estimate, self.sample_rate, mix.rate), mix.length)
        peak = float(np.max(np.abs(estimate))) if estimate.size else 0.0
        if self.level != "model" and mix.peak <= 1.0 and peak > _FULL_SCALE:
            # resampling to the caller's rate can overshoot the model-rate peak guard slightly
            estimate = estimate * np.float32(_FULL_SCALE / peak)
        if mix.tensor_like is None:
            return estimate
        dtype = mix.tensor_like.dtype if mix.tensor_like.is_floating_point() else torch.float32
        return torch.from_numpy(np.ascontiguousarray(estimate)).to(mix.tensor_like.device, dtype)

    # -- public (enroll: SpeakerInputs) --------------------------------------------------
    def extract(
        self,
        mixture: AudioInput | Sequence[AudioInput],
        reference: None | AudioInput | Sequence[AudioInput] = None,
        *,
        embedding: Any = None,
        sample_rate: int | None = None,
        reference_sample_rate: int | None = None,
        chunk_seconds: float | None = None,
        progress: Callable[[int, int], None] | None = None,
        return_confidence: bool = False,
        return_features: bool = False,
    ):
        """Extract the reference talker from the mixture.

        Args:
            mixture: path, NumPy array or tensor, or a list of them (returns a list).
            reference: recording of the target talker (same kinds), or a list
                matching ``mixture``; one reference is shared by all mixtures. An
                :class:`~usef.enrollment.Enrollment` (from :meth:`enroll`) may stand in for a
                reference. A list always means a batch: several clips of one speaker go
                through ``enroll([...])``.
            embedding: speaker vector ``(E,)`` (array, tensor or ``.npy`` path) for
                embedding models, instead of ``reference``; may be a list.
            sample_rate: rate of array/tensor inputs (files carry their own).
            reference_sample_rate: rate of an array reference when it differs from
                ``sample_rate``.
            chunk_seconds: override the chunk length for this call (>= 0.5 s).
            progress: called as ``progress(done, total)`` after each batch of chunks of a
                long mixture (e.g. to drive a progress bar on an hour-long file).
            return_confidence: also return a confidence in [0, 1] that the output is the
                enrolled talker (low when another talker was extracted or the target does not
                speak; :mod:`usef.confidence`): each result becomes ``(estimate, confidence)``.
                Costs two more model passes; needs a model with a fitted confidence map.
            return_features: each result becomes ``(estimate, features)``, the ``(3,)`` dB cues of
                :data:`usef.confidence.FEATURES` (what a confidence map is fitted on).

        Shape:
            mixture ``(T_mix,)`` or ``(C, T_mix)``; reference ``(T_ref,)`` or
            ``(C, T_ref)`` -> estimate ``(T_mix,)`` at the mixture's rate.
        """
        single = not isinstance(mixture, (list, tuple))
        mixtures = [mixture] if single else list(mixture)

        def per_item(value: Any, argument: str) -> list:
            if isinstance(value, (list, tuple)) and not single:
                if len(value) != len(mixtures):
                    raise ValueError(f"{argument}: got {len(value)} items for {len(mixtures)} mixtures")
                return list(value)
            if isinstance(value, (list, tuple)):
                raise TypeError(f"{argument}: a list was given for a single mixture (lists are batches; "
                                "several clips of one speaker: extractor.enroll([...]))")
            return [value] * len(mixtures)

        refs_in, embs_in = per_item(reference, "reference"), per_item(embedding, "embedding")
        ref_rate = reference_sample_rate or sample_rate
        if chunk_seconds is not None:
            check_chunk_seconds(chunk_seconds)
        if reference_sample_rate is not None:
            check_sample_rate(reference_sample_rate, "reference_sample_rate")
        chunk = round((chunk_seconds or self.chunk_seconds) * self.sample_rate)
        if return_confidence and return_features:
            raise ValueError("return_confidence and return_features: ask for one of them")
        scorer = self.confidence_map() if return_confidence else None
        want_energy = return_confidence or return_features
        results: list = [None] * len(mixtures)
        energy: list = [None] * len(mixtures)  # (5,) summed energies per item, for the confidence
        groups: dict = {}
        with torch.inference_mode():
            for i, (mix_in, ref_in, emb_in) in enumerate(zip(mixtures, refs_in, embs_in)):
                mix = self._mixture(mix_in, sample_rate)
                ref, emb = self._condition_input(ref_in, emb_in, ref_rate)
                if not np.any(mix.wave):  # silence in, silence out: skip the model
                    results[i] = self._finish(np.zeros_like(mix.wave), mix)
                elif mix.wave.shape[0] > chunk:
                    condition = self._condition([ref], [emb])
                    sink: list | None = [] if want_energy else None
                    results[i] = self._finish(self._chunked(mix.wave, condition, chunk, progress, sink), mix)
                    if sink:
                        energy[i] = np.concatenate(sink).sum(axis=0)
                else:
                    key = (mix.wave.shape[0], emb is None, isinstance(ref, Enrollment))
                    groups.setdefault(key, []).append((i, mix, ref, emb))
            # equal-length mixtures share a forward pass; references are padded exactly
            for items in groups.values():
                for first in range(0, len(items), self.batch_size):
                    batch = items[first : first + self.batch_size]
                    condition = self._condition([b[2] for b in batch], [b[3] for b in batch])
                    sink = [] if want_energy else None
                    estimates = self._forward(np.stack([b[1].wave for b in batch]), condition, sink)
                    for k, ((i, mix, _, _), est) in enumerate(zip(batch, estimates)):
                        results[i] = self._finish(est, mix)
                        if sink:
                            energy[i] = sink[0][k]
        if want_energy:
            # a silent mixture holds nobody: every energy 0, confidence 0
            feats = confidence_module.features(np.stack([e if e is not None else np.zeros(5) for e in energy]))
            if scorer is not None:
                scores = [float(v) if e is not None else 0.0 for v, e in zip(scorer(feats), energy)]
                results = list(zip(results, scores))
            else:
                results = list(zip(results, feats))
        return results[0] if single else results


def load_model(
    name_or_path: str | os.PathLike = "default",
    device: None | str | torch.device = None,
    sample_rate: int | None = None,
    need_confidence: bool = False,
    **options: Any,
) -> Extractor:
    """Load a model for repeated extraction (weights cached per directory and device).

    Args:
        name_or_path: ``"default"`` (bundled default for ``sample_rate``), a bundled
            name (:func:`list_models`) or a directory written by ``save_pretrained``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; default CUDA when available.
        sample_rate: rate of the audio to process; only picks the default model.
        need_confidence: ``"default"`` picks a model with a fitted confidence map (for
            ``return_confidence``; :func:`usef.hub.default_model_name`).
        **options: :class:`Extractor` settings (``chunk_seconds``, ``overlap``, ...).

    Raises:
        ValueError: unknown model name/directory (lists the bundled names) or device.
    """
    path = hub.resolve_model(name_or_path, sample_rate, need_confidence)
    model = hub.load_cached(path, hub.resolve_device(device))
    logger.info("using model %s (%d Hz) from %s", path.name, model.sample_rate, path)
    return Extractor(model, name=path.name, **options)


def extract(
    mixture: AudioInput | Sequence[AudioInput],
    reference: None | AudioInput | Sequence[AudioInput] = None,
    *,
    embedding: Any = None,
    sample_rate: int | None = None,
    model: str | os.PathLike | Extractor | torch.nn.Module = "default",
    device: None | str | torch.device = None,
    chunk_seconds: float | None = None,
    progress: Callable[[int, int], None] | None = None,
    return_confidence: bool = False,
):
    """Extract the target talker of ``reference`` from ``mixture``.

    >>> import numpy as np, usef
    >>> rng = np.random.default_rng(0)
    >>> mixture, reference = rng.standard_normal(16000), rng.standard_normal(12000)
    >>> usef.extract(mixture, reference, sample_rate=16000).shape   # bundled default model
    (16000,)

    Args:
        mixture: path, NumPy array or tensor, ``(T,)`` or channels-first ``(C, T)``;
            or a list of them (returns a list).
        reference: a recording of the target talker (same kinds), or a list; or an
            :class:`~usef.enrollment.Enrollment` (``model="default"`` then uses the bundled
            model that made it).
        embedding: speaker vector for embedding models, instead of ``reference``.
        sample_rate: rate of array/tensor inputs (required for them).
        model: ``"default"``, a bundled name, a ``save_pretrained`` directory, an
            :class:`Extractor` or a loaded model.
        device: where to run; default CUDA when available.
        chunk_seconds: chunk length for long mixtures (default 20 s, at least 0.5 s).
        progress: ``progress(done, total)`` after each batch of chunks of a long mixture.
        return_confidence: return ``(estimate, confidence)`` (see :meth:`Extractor.extract`).

    Returns:
        The estimate at the mixture's rate and length, NumPy (array/path input)
        or a tensor on the input's device and dtype (tensor input).

    Shape:
        mixture ``(T_mix,)`` or ``(C, T_mix)`` -> ``(T_mix,)``.
    """
    if isinstance(reference, Enrollment) and model == "default" and reference.model_name in hub.list_models():
        model = reference.model_name  # an enrollment only works with the model that made it
    if isinstance(model, Extractor):
        extractor = model
    elif isinstance(model, torch.nn.Module):
        extractor = Extractor(model, device=device)
    elif model == "default" and isinstance(mixture, (list, tuple)) and mixture:
        # the default is chosen per item by its rate (usef.api_rates)
        return extract_by_rate(load_model, model, mixture, reference, embedding, sample_rate=sample_rate,
                               device=device, chunk_seconds=chunk_seconds, progress=progress,
                               return_confidence=return_confidence)
    else:
        extractor = load_model(model, device=device, sample_rate=_rate(mixture, sample_rate) if model == "default"
                               else None, need_confidence=return_confidence)
    return extractor.extract(
        mixture, reference, embedding=embedding, sample_rate=sample_rate, chunk_seconds=chunk_seconds,
        progress=progress, return_confidence=return_confidence,
    )
