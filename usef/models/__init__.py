"""Model registry: a name is a preset of constructor arguments of one shared class.

>>> from usef.models import MODELS, build_model
>>> sorted(MODELS)[:2]
['dvector_conformer', 'embedding_conformer']
>>> build_model("usef_conformer", preset="tiny").sample_rate
8000
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field
from typing import Any

from usef.models.band_ensemble import BandEnsemble
from usef.models.base import TargetSpeakerExtractor
from usef.models.embedding import EmbeddingExtractor
from usef.models.usef import UsefExtractor

# Released USEF-TFGridNet (8 kHz): STFT 128/64, C = 128, CMHA 4 heads E = 8, six v2 blocks with
# D = 256, H = 256 (USEF_FACTS.md §1.1), complex spectral mapping.
_TFGRIDNET_8K = {
    "sample_rate": 8000, "n_fft": 128, "hop_length": 64, "encoder_channels": 128, "spectral_output": "mapping",
    "separator": "tfgridnet",
    "separator_args": {"channels": 256, "num_blocks": 6, "hidden": 256, "num_heads": 4, "qk_channels": 8},
}
# CPU-class model: 32 ms / 16 ms frames (62.5 frames/s) keep the sequence short; a narrow
# shared encoder (C = 16) keeps the frame vector (2C x F) small; complex mask output learns
# faster than mapping on a small budget.
_CONFORMER_8K = {
    "sample_rate": 8000, "n_fft": 256, "hop_length": 128, "encoder_channels": 16, "spectral_output": "mask",
    "separator": "conformer",
    "separator_args": {"dim": 192, "num_layers": 6, "num_heads": 4, "ffn_dim": 384, "kernel_size": 15, "dropout": 0.0},
}
_TINY_TFGRIDNET = {
    "n_fft": 64, "hop_length": 32, "encoder_channels": 8,
    "separator_args": {"channels": 16, "num_blocks": 1, "hidden": 8, "num_heads": 2, "qk_channels": 2},
}
_TINY_CONFORMER = {
    "n_fft": 64, "hop_length": 32, "encoder_channels": 4,
    "separator_args": {"dim": 16, "num_layers": 1, "num_heads": 2, "ffn_dim": 32, "kernel_size": 3, "dropout": 0.0},
}


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its class, default arguments and named presets of overrides."""

    cls: type
    defaults: dict[str, Any]
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str = ""

    def __call__(self, **overrides: Any) -> TargetSpeakerExtractor:
        return build_model(_name_of(self), **overrides)


MODELS: dict[str, ModelSpec] = {
    "usef_tfgridnet": ModelSpec(
        UsefExtractor, dict(_TFGRIDNET_8K, attention_heads=4, attention_qk_channels=8),
        {"tiny": dict(_TINY_TFGRIDNET, attention_heads=2, attention_qk_channels=2)},
        "USEF-TFGridNet, the released 8 kHz configuration (GPU-class, ~15 M parameters)",
    ),
    "usef_conformer": ModelSpec(
        UsefExtractor, dict(_CONFORMER_8K, attention_heads=4, attention_qk_channels=4),
        {"tiny": dict(_TINY_CONFORMER, attention_heads=2, attention_qk_channels=2)},
        "USEF conditioning over a frame Conformer (CPU-class, < 5 M parameters)",
    ),
    "embedding_tfgridnet": ModelSpec(
        EmbeddingExtractor, dict(_TFGRIDNET_8K, fusion="multiply", embedding_source="joint", embedding_dim=256),
        {"tiny": dict(_TINY_TFGRIDNET, embedding_dim=8, speaker_encoder_args={"hidden": 8, "num_blocks": 1})},
        "TF-GridNet conditioned on a jointly trained speaker embedding",
    ),
    "embedding_conformer": ModelSpec(
        EmbeddingExtractor, dict(_CONFORMER_8K, fusion="multiply", embedding_source="joint", embedding_dim=256),
        {"tiny": dict(_TINY_CONFORMER, embedding_dim=8, speaker_encoder_args={"hidden": 8, "num_blocks": 1})},
        "Conformer conditioned on a jointly trained speaker embedding",
    ),
    "dvector_conformer": ModelSpec(
        EmbeddingExtractor,
        dict(_CONFORMER_8K, fusion="multiply", embedding_source="precomputed", embedding_dim=256),
        {"tiny": dict(_TINY_CONFORMER)},
        "Conformer conditioned on a pre-computed 256-d d-vector (e.g. resemblyzer)",
    ),
}


def _name_of(spec: ModelSpec) -> str:
    return next(name for name, candidate in MODELS.items() if candidate is spec)


def list_models() -> list[str]:
    """Registered model names."""
    return sorted(MODELS)


def model_arguments(name: str, preset: str | None = None, **overrides: Any) -> dict[str, Any]:
    """The full constructor arguments of ``name`` with ``preset`` and ``overrides`` applied.

    ``separator_args`` and ``speaker_encoder_args`` are merged key by key, so an override may
    change one separator setting and keep the rest.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    spec = MODELS[name]
    args = copy.deepcopy(spec.defaults)
    layers = []
    if preset is not None:
        if preset not in spec.presets:
            raise ValueError(
                f"model {name!r} has no preset {preset!r}; presets: {', '.join(sorted(spec.presets)) or 'none'}"
            )
        layers.append(spec.presets[preset])
    layers.append(overrides)
    for layer in layers:
        for key, value in copy.deepcopy(layer).items():
            if key in ("separator_args", "speaker_encoder_args") and isinstance(value, dict):
                args[key] = {**args.get(key, {}), **value}
            else:
                args[key] = value
    accepted = set(inspect.signature(spec.cls.__init__).parameters) - {"self"}
    unknown = sorted(set(args) - accepted)
    if unknown:
        raise ValueError(f"model {name!r} does not take argument(s) {unknown}; it takes {sorted(accepted)}")
    return args


def _member(role: str, spec: Any) -> dict[str, Any]:
    # a band ensemble's member as its checkpoint stores it: {model: NAME, args: {...}}
    if not isinstance(spec, dict) or set(spec) != {"model", "args"} or not isinstance(spec["args"], dict):
        raise ValueError(f"{BandEnsemble.name}: {role} must be a mapping {{model: NAME, args: {{...}}}} "
                         f"(a member's checkpoint config), got {spec!r}")
    if spec["model"] == BandEnsemble.name:
        raise ValueError(f"{BandEnsemble.name}: a member cannot itself be an ensemble")
    return spec


def _build_band_ensemble(preset: str | None, wide: Any = None, narrow: Any = None, **options: Any) -> BandEnsemble:
    if preset is not None:
        raise ValueError(f"model {BandEnsemble.name!r} has no presets; its members are given as wide= and narrow=")
    members = {role: _member(role, spec) for role, spec in (("wide", wide), ("narrow", narrow))}
    return BandEnsemble(*(build_model(m["model"], **m["args"]) for m in members.values()), **options)


def model_sample_rate(name: str, **overrides: Any) -> int:
    """The sample rate of the model ``build_model(name, **overrides)`` would build, without building it
    (a band ensemble runs at its wide member's rate)."""
    if name == BandEnsemble.name:
        wide = _member("wide", overrides.get("wide"))
        return model_sample_rate(wide["model"], **wide["args"])
    return int(model_arguments(name, **overrides)["sample_rate"])


def build_model(name: str, preset: str | None = None, **overrides: Any) -> TargetSpeakerExtractor:
    """Build the registered model ``name`` (its documented default when called with no overrides).

    ``band_ensemble`` (:class:`~usef.models.band_ensemble.BandEnsemble`, not a registry entry: it
    has no defaults) is built from its two members' configs, ``wide={model, args}`` and
    ``narrow={model, args}``, as its checkpoint stores them.

    Raises:
        ValueError: unknown name (the message lists the choices), preset or argument.
    """
    if name == BandEnsemble.name:
        return _build_band_ensemble(preset, **overrides)
    args = model_arguments(name, preset, **overrides)
    model = MODELS[name].cls(**args)
    model.name = name
    return model


__all__ = [
    "MODELS",
    "BandEnsemble",
    "EmbeddingExtractor",
    "ModelSpec",
    "TargetSpeakerExtractor",
    "UsefExtractor",
    "build_model",
    "list_models",
    "model_arguments",
    "model_sample_rate",
]
