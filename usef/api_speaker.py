"""The target speaker's side of :class:`usef.api.Extractor`: references, speaker vectors, enrollments.

A reference recording is checked, cropped to its most energetic ``max_reference_seconds`` and
resampled to the model's rate; a speaker vector (array, tensor or ``.npy`` path) is checked
against the model's ``embedding_dim``, or computed from a reference by the extractor's
``embedder`` for models that take no reference; an :class:`~usef.enrollment.Enrollment` is
checked against the model that made it. :meth:`SpeakerInputs.enroll` prepares a speaker once
from one or more clips. The model's condition is built from any of them here
(``model.prepare_condition``). :class:`usef.api.Extractor` inherits all of it; kept apart so
that module holds the extraction itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from usef import audio
from usef import vad as vad_module
from usef.enrollment import Enrollment
from usef.enrollment import build as build_enrollment
from usef.inputs import AudioInput, _coerce, _is_path


class SpeakerInputs:
    """What :class:`usef.api.Extractor` does with the target speaker.

    Uses the extractor's ``model``, ``name``, ``sample_rate``, ``max_reference_seconds``,
    ``embedder`` and ``device``.
    """

    # -- input preparation ---------------------------------------------------------------
    def _reference(self, x: AudioInput, sample_rate: int | None) -> np.ndarray:
        raw, rate, _ = _coerce(x, "reference", sample_rate)
        min_samples = int(getattr(self.model, "min_reference_samples", 0))
        wave = audio.validate_waveform(raw, "reference", rate, min_samples / self.sample_rate, allow_silence=False)
        wave = audio.most_energetic_window(wave, rate, self.max_reference_seconds)
        wave = audio.resample(wave, rate, self.sample_rate)
        if wave.shape[0] < min_samples:  # resampling may round a sample or two away
            wave = audio.fit_length(wave, min_samples)
        return wave

    def _embedding(self, x: Any) -> np.ndarray:
        dim = getattr(self.model, "embedding_dim", None)
        if dim is None:
            raise ValueError(f"embedding: model {self.name!r} takes no embedding; pass reference=")
        if _is_path(x):
            path = Path(x)
            if not path.is_file():
                raise FileNotFoundError(f"embedding: file not found: {path}")
            try:
                x = np.load(path, allow_pickle=False)
            except (ValueError, OSError) as exc:
                raise ValueError(f"embedding: cannot read {path} as .npy: {exc}") from None
        if isinstance(x, torch.Tensor):
            x = x.detach().to("cpu", torch.float32).numpy()
        x = np.asarray(x)
        if x.ndim == 2 and x.shape[0] == 1:
            x = x[0]
        if x.shape != (dim,) or not np.issubdtype(x.dtype, np.number):
            raise ValueError(f"embedding: expected numbers of shape ({dim},) or (1, {dim}), got {x.shape}")
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            raise ValueError("embedding: contains NaN or Inf values")
        return x

    def _condition_input(self, reference: Any, embedding: Any, sample_rate: int | None):
        if isinstance(reference, Enrollment):
            if embedding is not None:
                raise ValueError("reference: pass either an enrollment or embedding=, not both")
            reference.check(self.model, self.name)
            return reference, None
        if embedding is not None:
            if reference is not None:
                raise ValueError("reference: pass either reference= or embedding=, not both")
            return None, self._embedding(embedding)
        if reference is None:
            hint = " or embedding=" if getattr(self.model, "embedding_dim", None) else ""
            raise ValueError(f"reference: a recording of the target speaker is required{hint}")
        wave = self._reference(reference, sample_rate)
        if getattr(self.model, "needs_reference", True):
            return wave, None
        return None, self._embedding(self._embedder()(wave, self.sample_rate))

    def _embedder(self) -> Callable[[np.ndarray, int], np.ndarray]:
        if self.embedder is None:
            from usef.embeddings.dvector import EXTRA_HINT, ResemblyzerEmbedder

            dim = getattr(self.model, "embedding_dim", None)
            if dim != ResemblyzerEmbedder.embedding_dim:
                raise ValueError(f"reference: model {self.name!r} takes a {dim}-d speaker vector and the default "
                                 f"embedder (resemblyzer) makes 256-d ones: pass embedding= or Extractor(embedder=)")
            try:
                self.embedder = ResemblyzerEmbedder(device=str(self.device))
            except ImportError as exc:
                raise ImportError(f"reference: model {self.name!r} is conditioned on a resemblyzer d-vector; "
                                  f"computing it from the reference needs {EXTRA_HINT}, or pass embedding=") from exc
        return self.embedder

    # -- model calls ---------------------------------------------------------------------
    def _condition(self, refs: Sequence[np.ndarray | None], embs: Sequence[np.ndarray | None]):
        device = self.device
        if isinstance(refs[0], Enrollment):
            return refs[0].condition(self.model, list(refs), device)
        if embs[0] is not None:
            emb = torch.from_numpy(np.stack(embs)).to(device)
            return self.model.prepare_condition(embedding=emb)
        lengths = [r.shape[0] for r in refs]
        batch = np.zeros((len(refs), max(lengths)), dtype=np.float32)
        for i, r in enumerate(refs):
            batch[i, : r.shape[0]] = r
        return self.model.prepare_condition(
            reference=torch.from_numpy(batch).to(device),
            reference_lengths=torch.tensor(lengths, dtype=torch.int64, device=device),
        )

    # -- public --------------------------------------------------------------------------
    def enroll(
        self,
        clips: AudioInput | Sequence[AudioInput],
        *,
        sample_rate: int | None = None,
        trim: bool = True,
        vad: str = "energy",
    ) -> Enrollment:
        """Prepare a speaker once, from one clip or several clips of the *same* speaker.

        Each clip is checked like a reference, resampled to the model's rate, trimmed of
        silence and long pauses (``trim``, :func:`usef.vad.trim` with detector ``vad``) and
        cropped to its most energetic ``max_reference_seconds``. USEF models then attend to the
        frames of all clips together; embedding models use the average of the clips' vectors.
        The result goes to :meth:`extract` in place of a reference and can be saved
        (:meth:`Enrollment.save`) and loaded for this same model (:meth:`Enrollment.load`).

        Args:
            clips: a path, NumPy array or tensor, or a list of them (one speaker).
            sample_rate: rate of array/tensor clips (files carry their own).
            trim: drop silence and pauses longer than 0.5 s (never empties a clip).
            vad: ``"energy"`` or ``"silero"`` (when the silero-vad package is installed).

        Shape:
            each clip ``(T,)`` or ``(C, T)``.

        Raises:
            ValueError / FileNotFoundError: a bad clip (named ``clips[i]``); ImportError:
            ``vad="silero"`` without its package.
        """
        if vad not in vad_module.METHODS:
            raise ValueError(f"vad: must be one of {vad_module.METHODS}, got {vad!r}")
        items = list(clips) if isinstance(clips, (list, tuple)) else [clips]
        if not items:
            raise ValueError("clips: no clip given")
        min_samples = int(getattr(self.model, "min_reference_samples", 0))
        waves = []
        for i, clip in enumerate(items):
            argument = f"clips[{i}]" if len(items) > 1 else "clip"
            if not trim:  # exactly the reference= path
                try:
                    waves.append(self._reference(clip, sample_rate))
                except (ValueError, TypeError, FileNotFoundError) as exc:
                    raise type(exc)(f"{argument}: {exc}") from None
                continue
            raw, rate, _ = _coerce(clip, argument, sample_rate)
            wave = audio.validate_waveform(raw, argument, rate, min_samples / self.sample_rate, allow_silence=False)
            whole = audio.resample(wave, rate, self.sample_rate)
            wave = vad_module.trim(whole, self.sample_rate, vad)
            if wave.shape[0] < min_samples:  # too little speech found to stand alone: the whole clip
                wave = audio.fit_length(whole, max(min_samples, whole.shape[0]))
            waves.append(audio.most_energetic_window(wave, self.sample_rate, self.max_reference_seconds))
        with torch.inference_mode():
            vectors = None
            if not getattr(self.model, "needs_reference", True):
                vectors = [self._embedding(self._embedder()(w, self.sample_rate)) for w in waves]
            return build_enrollment(self.model, waves, name=self.name, vectors=vectors)
