"""Checkpoint files: safetensors weights + a YAML config. No pickle anywhere.

A checkpoint directory holds
- ``model.safetensors``: the state dict;
- ``config.yaml``: ``model`` (registry name), ``args`` (constructor arguments),
  ``sample_rate``, ``versions`` (usef, torch) and ``format``.

This module knows tensors, shapes and config dicts only, never model classes: the model
layer (``usef.models``) saves through it, and :mod:`usef.checkpoint`, above both, builds
models from it. Keeping it that way is what keeps the import graph free of cycles.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from usef._version import __version__
from usef.atomic_io import atomic_write, write_text_atomic

logger = logging.getLogger(__name__)

__all__ = [
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "WEIGHTS_NAME",
    "CheckpointError",
    "checkpoint_config",
    "load_state",
    "mismatch_details",
    "read_config",
    "read_weights",
    "save_pretrained",
    "weight_shapes",
]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.yaml"
FORMAT_VERSION = 1

PathLike = Union[str, "os.PathLike[str]"]


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt or does not match its config."""


def checkpoint_config(model: torch.nn.Module, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config written beside the weights (``model`` needs ``name``, ``config``, ``sample_rate``)."""
    config = {
        "format": FORMAT_VERSION,
        "model": model.name,
        "args": model.config,
        "sample_rate": model.sample_rate,
        "versions": {"usef": __version__, "torch": torch.__version__.split("+")[0]},
    }
    if extra:
        config.update(extra)
    return config


def save_pretrained(model: torch.nn.Module, directory: PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.yaml`` into ``directory`` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    config = checkpoint_config(model, extra)
    atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    write_text_atomic(directory / CONFIG_NAME, yaml.safe_dump(config, sort_keys=False))
    return directory


def read_config(directory: PathLike) -> dict[str, Any]:
    """Parse and check ``config.yaml`` of a checkpoint directory."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint config not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            config = yaml.safe_load(handle)
    except yaml.YAMLError as error:
        raise CheckpointError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(config, dict) or "model" not in config or not isinstance(config.get("args"), dict):
        raise CheckpointError(f"{path}: expected a mapping with 'model' and 'args' keys")
    return config


def _weights_path(directory: PathLike) -> Path:
    weights = Path(directory) / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"checkpoint weights not found: {weights}")
    return weights


def weight_shapes(directory: PathLike) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in ``model.safetensors``, read from the file's header only
    (no tensor data is loaded), so a model can be checked against it before it is built.

    Raises:
        FileNotFoundError: no weights file.
        CheckpointError: the file is not a readable safetensors file.
    """
    weights = _weights_path(directory)
    try:
        with safe_open(str(weights), framework="pt", device="cpu") as handle:
            return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{weights}: corrupt or not a safetensors file ({error})") from error


def read_weights(directory: PathLike) -> dict[str, torch.Tensor]:
    """The state dict in ``model.safetensors`` on the CPU.

    Raises:
        FileNotFoundError: no weights file.
        CheckpointError: the file is not a readable safetensors file.
    """
    weights = _weights_path(directory)
    try:
        return load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{weights}: corrupt or not a safetensors file ({error})") from error


def mismatch_details(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]]) -> list[str]:
    """What differs between the shapes a model ``expected`` and the ones a file holds (``found``):
    missing, unexpected and mis-shaped names, a few of each; empty when they match."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(found) if tuple(expected[k]) != tuple(found[k]))
    details = []
    if missing:
        details.append(f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}")
    if unexpected:
        details.append(f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    if mismatched:
        shapes = [f"{k}: {tuple(found[k])} vs {tuple(expected[k])}" for k in mismatched[:3]]
        details.append(f"shape mismatch {shapes}")
    return details


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str, strict: bool = True) -> list[str]:
    """Load ``state`` into ``model``; with ``strict=False`` skip missing or mis-shaped tensors.

    Returns the names that were skipped (always empty when strict).
    """
    own = model.state_dict()
    if strict:
        details = mismatch_details({k: tuple(v.shape) for k, v in own.items()},
                                   {k: tuple(v.shape) for k, v in state.items()})
        if details:
            raise CheckpointError(f"{source}: weights do not match the model config ({'; '.join(details)})")
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(usable, strict=False)
    skipped = sorted(k for k in own if k not in usable)
    if skipped:
        logger.info("initialised %d tensors from %s; left %d at random: %s", len(usable), source, len(skipped), skipped)
    return skipped
