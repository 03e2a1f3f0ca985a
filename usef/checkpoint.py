"""Checkpoints: safetensors weights + a YAML config. No pickle anywhere.

A checkpoint directory holds
- ``model.safetensors``: the state dict;
- ``config.yaml``: ``model`` (registry name), ``args`` (constructor arguments),
  ``sample_rate``, ``versions`` (usef, torch) and ``format``.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any, Union

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from usef import __version__

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.yaml"
FORMAT_VERSION = 1

PathLike = Union[str, "os.PathLike[str]"]


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt or does not match its config."""


def checkpoint_config(model: torch.nn.Module, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config written beside the weights."""
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


def _atomic_write(path: Path, write) -> None:
    # os.open with 0o666 (minus umask) rather than mkstemp's 0o600: a shared model folder
    # must stay readable by other users
    tmp = str(path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_pretrained(model: torch.nn.Module, directory: PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.yaml`` into ``directory`` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    config = checkpoint_config(model, extra)
    _atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))

    def write_config(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            yaml.safe_dump(config, handle, sort_keys=False)

    _atomic_write(directory / CONFIG_NAME, write_config)
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


def load_pretrained(
    directory: PathLike, device: str | torch.device | None = None, strict: bool = True
) -> torch.nn.Module:
    """Rebuild a model written by :func:`save_pretrained`, in eval mode.

    Raises:
        FileNotFoundError: the directory, weights or config is missing.
        CheckpointError: corrupt weights/config, unknown model name or mismatched tensors
            (the message names the file and the problem).
    """
    from usef.models import build_model

    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {directory}")
    config = read_config(directory)
    try:
        model = build_model(config["model"], **config["args"])
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{directory / CONFIG_NAME}: cannot build the model: {error}") from error
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"checkpoint weights not found: {weights}")
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{weights}: corrupt or not a safetensors file ({error})") from error
    load_state(model, state, source=str(weights), strict=strict)
    model.eval()
    if device is not None:
        model.to(device)
    return model


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str, strict: bool = True) -> list[str]:
    """Load ``state`` into ``model``; with ``strict=False`` skip missing or mis-shaped tensors.

    Returns the names that were skipped (always empty when strict).
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if strict and (missing or unexpected or mismatched):
        details = []
        if missing:
            details.append(f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}")
        if unexpected:
            details.append(f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
        if mismatched:
            shapes = [f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in mismatched[:3]]
            details.append(f"shape mismatch {shapes}")
        raise CheckpointError(f"{source}: weights do not match the model config ({'; '.join(details)})")
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(usable, strict=False)
    skipped = missing + mismatched
    if skipped:
        logger.info("initialised %d tensors from %s; left %d at random: %s", len(usable), source, len(skipped), skipped)
    return skipped
