"""Reusable enrollments: a speaker's prepared condition, computed once, saved, reused.

``Extractor.enroll(clips)`` turns one or several clips of the *same* speaker into an
:class:`Enrollment`; ``extract(mixture, enrollment)`` uses it in place of a reference. What it
holds is the model's reference-side work (``model.enrollment_state``):

- USEF models: the shared encoder's features of every clip (each clip encoded alone), laid end
  to end along ``T_ref``, plus the frames per clip; the cross attention then attends to the
  frames of all clips at once.
- Embedding models: the average of the clips' speaker vectors.

Either is only meaningful for the model that made it, so an enrollment carries a fingerprint of
that model's config and weights (:func:`model_fingerprint`) and is refused by any other model.

File format (``.enroll``): safetensors, no pickle. Tensors: the state (``features`` and
``clip_frames``, or ``embedding``). Metadata key ``usef``: a JSON header with ``format``,
``format_version``, ``model``, ``sample_rate``, ``fingerprint``, ``num_clips``,
``clip_seconds``, ``kind`` and ``usef_version``.
"""

from __future__ import annotations

import hashlib
import json
import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import torch

from usef._version import __version__
from usef.atomic_io import atomic_write

__all__ = ["FORMAT", "FORMAT_VERSION", "Enrollment", "model_fingerprint"]

FORMAT = "usef-enrollment"
FORMAT_VERSION = 1
_HEADER_KEY = "usef"
_KINDS = {"features": ("features", "clip_frames"), "embedding": ("embedding",)}

PathLike = Union[str, "os.PathLike[str]"]

# model -> (in-place version counters of its tensors, fingerprint): hashing the weights of a
# bundled model takes tens of ms, and a list run checks the fingerprint once per item
_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of a model's registry name, config and weights (16 hex digits).

    Equal for the same checkpoint loaded anywhere (any device); different as soon as one
    weight or one config value differs.
    """
    state = model.state_dict()
    try:
        versions = tuple(tensor._version for tensor in state.values())
    except RuntimeError:  # inference tensors keep no version counter: no cache for such a model
        versions = None
    cached = _FINGERPRINTS.get(model)
    if versions is not None and cached is not None and cached[0] == versions:
        return cached[1]
    digest = hashlib.sha256()
    header = {"name": getattr(model, "name", type(model).__name__), "config": getattr(model, "config", {})}
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    for key in sorted(state):
        tensor = state[key].detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{key}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.numpy().tobytes())
    fingerprint = digest.hexdigest()[:16]
    _FINGERPRINTS[model] = (versions, fingerprint)
    return fingerprint


@dataclass
class Enrollment:
    """One speaker's prepared condition for one model.

    Made by :meth:`usef.Extractor.enroll`; passed to ``extract`` in place of a reference.

    Attributes:
        state: the model's enrollment state, CPU tensors (see the module docstring).
        model_name: the name of the model that made it (for messages; the fingerprint decides).
        sample_rate: that model's rate.
        fingerprint: :func:`model_fingerprint` of that model.
        num_clips: how many clips were enrolled.
        clip_seconds: each clip's length as used (after trimming), in seconds.
        version: usef version that made it.
    """

    state: dict[str, torch.Tensor]
    model_name: str
    sample_rate: int
    fingerprint: str
    num_clips: int
    clip_seconds: list[float] = field(default_factory=list)
    version: str = __version__

    @property
    def kind(self) -> str:
        """``"features"`` (USEF models) or ``"embedding"`` (embedding models)."""
        return "features" if "features" in self.state else "embedding"

    @property
    def seconds(self) -> float:
        """Total enrolled speech, in seconds."""
        return float(sum(self.clip_seconds))

    def __repr__(self) -> str:
        return (f"Enrollment(model={self.model_name!r}, sample_rate={self.sample_rate}, "
                f"num_clips={self.num_clips}, seconds={self.seconds:.2f}, kind={self.kind!r})")

    def check(self, model: torch.nn.Module, name: str | None = None) -> None:
        """Raise ValueError unless this enrollment was made by ``model`` (same config and weights)."""
        fingerprint = model_fingerprint(model)
        if fingerprint != self.fingerprint:
            this = name or getattr(model, "name", type(model).__name__)
            raise ValueError(
                f"enrollment: made for model {self.model_name!r} ({self.sample_rate} Hz, fingerprint "
                f"{self.fingerprint}) but this model is {this!r} (fingerprint {fingerprint}); enroll the "
                f"clips again with this model, or extract with {self.model_name!r}"
            )

    def condition(self, model: torch.nn.Module, enrollments: list[Enrollment] | None = None,
                  device: torch.device | str | None = None):
        """The model's condition for this enrollment (batch of 1), or for ``enrollments`` (a batch).

        Checks every enrollment against ``model`` first.
        """
        batch = enrollments or [self]
        for enrollment in batch:
            enrollment.check(model)
        if device is None:
            param = next(model.parameters(), None)
            device = param.device if param is not None else torch.device("cpu")
        return model.enrollment_condition([{k: v.to(device) for k, v in e.state.items()} for e in batch])

    # -- files ---------------------------------------------------------------------------
    def header(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "model": self.model_name,
            "sample_rate": self.sample_rate, "fingerprint": self.fingerprint, "num_clips": self.num_clips,
            "clip_seconds": [round(s, 4) for s in self.clip_seconds], "kind": self.kind,
            "usef_version": self.version,
        }

    def save(self, path: PathLike) -> Path:
        """Write the enrollment to ``path`` (safetensors + JSON header), atomically."""
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {key: value.detach().to("cpu").contiguous() for key, value in self.state.items()}
        # safetensors replaces the file it writes; atomic_write restores a readable mode
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={_HEADER_KEY: json.dumps(self.header())}))
        return path

    @classmethod
    def load(cls, path: PathLike, model: Any = None) -> Enrollment:
        """Read an enrollment file; with ``model`` (a model or an ``Extractor``), also check that
        it was made by that model.

        Raises:
            FileNotFoundError: no such file.
            ValueError: not an enrollment file, an unknown format version, or made by another model.
        """
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"enrollment: file not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
        except (SafetensorError, OSError, ValueError) as exc:
            raise ValueError(f"enrollment: {path} is not an enrollment file ({exc})") from None
        try:
            header = json.loads(metadata[_HEADER_KEY])
            if header["format"] != FORMAT:
                raise KeyError("format")
            enrollment = cls(
                state=tensors, model_name=str(header["model"]), sample_rate=int(header["sample_rate"]),
                fingerprint=str(header["fingerprint"]), num_clips=int(header["num_clips"]),
                clip_seconds=[float(s) for s in header.get("clip_seconds", [])],
                version=str(header.get("usef_version", "")),
            )
            version = int(header["format_version"])
        except (KeyError, TypeError, ValueError, json.JSONDecodeError):
            raise ValueError(f"enrollment: {path} is not an enrollment file (no valid '{_HEADER_KEY}' header)") from None
        if version > FORMAT_VERSION:
            raise ValueError(f"enrollment: {path} has format version {version}; this usef ({__version__}) "
                             f"reads up to {FORMAT_VERSION}: upgrade usef")
        kind = header.get("kind", enrollment.kind)
        if kind not in _KINDS or set(tensors) != set(_KINDS[kind]):
            raise ValueError(f"enrollment: {path} holds tensors {sorted(tensors)}, not a "
                             f"{header.get('kind')!r} enrollment")
        if model is not None:
            extractor_model = getattr(model, "model", model)  # an Extractor or a bare model
            enrollment.check(extractor_model, getattr(model, "name", None))
        return enrollment


def build(model: torch.nn.Module, waves: list, *, name: str, vectors: list | None = None) -> Enrollment:
    """An :class:`Enrollment` of clips already at the model's rate (mono float32 ``(T,)``).

    ``vectors`` (one ``(E,)`` per clip) replace the model's own reference work for models
    conditioned on a pre-computed speaker vector: their enrollment is the average vector.
    """
    import numpy as np

    if not waves:
        raise ValueError("clips: no clip given")
    rate = int(model.sample_rate)
    if vectors is not None:
        state = {"embedding": torch.from_numpy(np.mean(np.stack(vectors), axis=0).astype(np.float32))}
    else:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        lengths = [w.shape[0] for w in waves]
        batch = np.zeros((len(waves), max(lengths)), dtype=np.float32)
        for i, wave in enumerate(waves):
            batch[i, : wave.shape[0]] = wave
        with torch.inference_mode():
            state = model.enrollment_state(torch.from_numpy(batch).to(device),
                                           torch.tensor(lengths, dtype=torch.int64, device=device))
        state = {key: value.detach().to("cpu").clone() for key, value in state.items()}
    return Enrollment(state=state, model_name=name, sample_rate=rate, fingerprint=model_fingerprint(model),
                      num_clips=len(waves), clip_seconds=[w.shape[0] / rate for w in waves])
