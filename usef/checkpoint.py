"""Models from checkpoints: rebuild a registered model from a ``save_pretrained`` directory.

This module sits above both the model registry (:mod:`usef.models`) and the file layer
(:mod:`usef.checkpoint_io`, safetensors + YAML, no pickle anywhere), which know nothing of
each other's direction: models save through the file layer, and only this module turns
files back into models. The file-level names are re-exported here so that
``from usef.checkpoint import save_pretrained, load_state, ...`` keeps working.

Before a model is built for real, the shapes its config implies (built on torch's ``meta``
device: no memory, no initialisation) are compared with the tensor shapes in the weights
file's header, so a config that does not match its weights, e.g. one edited to huge
dimensions, fails at once instead of first allocating the whole model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from usef.checkpoint_io import (  # re-exported: the file-level checkpoint API
    CONFIG_NAME,
    FORMAT_VERSION,
    WEIGHTS_NAME,
    CheckpointError,
    PathLike,
    checkpoint_config,
    linked_folders,
    load_state,
    mismatch_details,
    read_config,
    read_weights,
    save_pretrained,
    weight_shapes,
)
from usef.models import build_model

__all__ = [
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "WEIGHTS_NAME",
    "CheckpointError",
    "check_config_matches_weights",
    "checkpoint_config",
    "linked_folders",
    "load_pretrained",
    "load_state",
    "read_config",
    "read_weights",
    "save_pretrained",
    "weight_shapes",
]


def _build(directory: Path, config: dict, device: str | torch.device | None = None) -> torch.nn.Module:
    try:
        if device is None:
            return build_model(config["model"], **config["args"])
        with torch.device(device):
            return build_model(config["model"], **config["args"])
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{directory / CONFIG_NAME}: cannot build the model: {error}") from error


def check_config_matches_weights(directory: PathLike, config: dict | None = None) -> None:
    """Raise :class:`CheckpointError` unless the model ``config.yaml`` describes has exactly the
    tensors (names and shapes) of ``model.safetensors``; reads only the weights file's header
    and builds the model on the ``meta`` device, so nothing model-sized is allocated.

    Raises:
        FileNotFoundError: the config or weights file is missing.
        CheckpointError: corrupt files, unknown model, or config and weights disagree.
    """
    directory = Path(directory)
    config = read_config(directory) if config is None else config
    found = weight_shapes(directory)
    skeleton = _build(directory, config, device="meta")
    expected = {name: tuple(tensor.shape) for name, tensor in skeleton.state_dict().items()}
    details = mismatch_details(expected, found)
    if details:
        raise CheckpointError(
            f"{directory / WEIGHTS_NAME}: weights do not match the model that {CONFIG_NAME} describes "
            f"({'; '.join(details)}); was {CONFIG_NAME} edited or copied from another model?"
        )


def _shifts(value: Any, directory: Path) -> int | None:
    # the frame-grid offsets averaged at inference (TargetSpeakerExtractor.extract) that the
    # model card measured; absent: 1
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CheckpointError(f"{directory / CONFIG_NAME}: shifts must be a positive integer, got {value!r}")
    return value


def load_pretrained(
    directory: PathLike, device: str | torch.device | None = None, strict: bool = True
) -> torch.nn.Module:
    """Rebuild a model written by :func:`save_pretrained`, in eval mode.

    With ``strict`` (the default) the config is first checked against the weights file's header
    (:func:`check_config_matches_weights`), so a mismatch costs no model-sized allocation.

    Raises:
        FileNotFoundError: the directory, weights or config is missing.
        CheckpointError: corrupt weights/config, unknown model name or mismatched tensors
            (the message names the file and the problem).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {directory}")
    config = read_config(directory)
    if strict:
        check_config_matches_weights(directory, config)
    model = _build(directory, config)
    state = read_weights(directory)
    load_state(model, state, source=str(directory / WEIGHTS_NAME), strict=strict)
    model.eval()
    # facts about how the weights were trained, read by the extractor (not constructor args:
    # they do not change the network)
    model.output_level = config.get("output_level")
    model.confidence_map = config.get("confidence")
    model.inference_shifts = _shifts(config.get("shifts"), directory)
    if device is not None:
        model.to(device)
    return model
