"""Checkpoint files: safetensors weights + a YAML config. No pickle anywhere.

A checkpoint directory holds
- ``model.safetensors``: the state dict;
- ``config.yaml``: ``model`` (registry name), ``args`` (constructor arguments),
  ``sample_rate``, ``versions`` (usef, torch) and ``format``.

A model made of other models (an ensemble) may *link* its members' tensors instead of copying
them: ``linked_weights`` in ``config.yaml`` maps a prefix (``wide``) to another checkpoint folder,
relative to this one, and the SHA-256 of that folder's ``model.safetensors``; the tensors
``wide.*`` are read from there, and a changed or missing file is an error, never a silent swap.

This module knows tensors, shapes and config dicts only, never model classes: the model
layer (``usef.models``) saves through it, and :mod:`usef.checkpoint`, above both, builds
models from it. Keeping it that way is what keeps the import graph free of cycles.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
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
    "linked_folders",
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
LINKS_KEY = "linked_weights"
_SHA256 = re.compile(r"[0-9a-f]{64}")

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


def save_pretrained(model: torch.nn.Module, directory: PathLike, extra: dict[str, Any] | None = None,
                    link: Mapping[str, PathLike] | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.yaml`` into ``directory`` (created if needed).

    ``link`` maps a prefix of the state dict (a member's name, e.g. ``"wide"``) to a checkpoint
    folder that holds exactly those tensors (names without the prefix, equal values): they are
    left out of this folder's weights and linked instead (module docstring).

    Raises:
        ValueError: a linked folder does not hold exactly the model's tensors under its prefix.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    config = checkpoint_config(model, extra)
    if link:
        config[LINKS_KEY] = {}
        for prefix, folder in link.items():
            member = {k[len(prefix) + 1:]: state.pop(k) for k in [k for k in state if k.startswith(prefix + ".")]}
            stored = read_weights(folder)
            if set(stored) != set(member) or any(not torch.equal(stored[k], member[k]) for k in member):
                raise ValueError(f"link {prefix!r}: {Path(folder) / WEIGHTS_NAME} does not hold the model's "
                                 f"'{prefix}.*' tensors")
            config[LINKS_KEY][prefix] = {"folder": Path(os.path.relpath(Path(folder).resolve(), directory.resolve())).as_posix(),
                                         "sha256": _sha256(Path(folder) / WEIGHTS_NAME)}
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
    shapes = {}
    for prefix, weights in _weight_files(directory):
        try:
            with safe_open(str(weights), framework="pt", device="cpu") as handle:
                found = {prefix + name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(f"{weights}: corrupt or not a safetensors file ({error})") from error
        _add_once(shapes, found, weights)
    return shapes


def read_weights(directory: PathLike) -> dict[str, torch.Tensor]:
    """The state dict in ``model.safetensors`` on the CPU.

    Raises:
        FileNotFoundError: no weights file.
        CheckpointError: the file is not a readable safetensors file.
    """
    state = {}
    for prefix, weights in _weight_files(directory):
        try:
            found = {prefix + name: tensor for name, tensor in load_file(str(weights), device="cpu").items()}
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(f"{weights}: corrupt or not a safetensors file ({error})") from error
        _add_once(state, found, weights)
    return state


def _add_once(into: dict, found: Mapping, source: Path) -> None:
    # a folder's own tensor and a linked member's of the same name: which one is meant is unknowable
    twice = sorted(set(into) & set(found))
    if twice:
        raise CheckpointError(f"{source}: tensors also held by the linking folder: {twice[:3]}")
    into.update(found)


def _sha256(path: Path) -> str:
    stat = path.stat()
    return _sha256_of(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    # size and mtime in the key: a file rewritten in place is hashed again
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def linked_folders(directory: PathLike) -> dict[str, Path]:
    """Prefix -> checkpoint folder of the tensors ``directory`` links instead of holding (empty for
    an ordinary checkpoint), each checked against its recorded SHA-256.

    Raises:
        CheckpointError: a malformed ``linked_weights`` entry, or a linked file that is missing or
            differs from the one the checkpoint was written with.
    """
    directory = Path(directory)
    if not (directory / CONFIG_NAME).is_file():
        return {}
    links = read_config(directory).get(LINKS_KEY) or {}
    source = directory / CONFIG_NAME
    if not isinstance(links, Mapping):
        raise CheckpointError(f"{source}: {LINKS_KEY} must map prefixes to {{folder, sha256}}")
    folders = {}
    for prefix, entry in links.items():
        if not (isinstance(entry, Mapping) and isinstance(entry.get("folder"), str)
                and _SHA256.fullmatch(str(entry.get("sha256", "")))):
            raise CheckpointError(f"{source}: {LINKS_KEY}.{prefix} must be {{folder: PATH, sha256: 64 hex digits}}")
        weights = directory / entry["folder"] / WEIGHTS_NAME
        if not weights.is_file():
            raise CheckpointError(f"{source}: the '{prefix}' tensors are linked to {weights}, which does not exist; "
                                  f"keep that model folder at {entry['folder']} beside this one")
        if _sha256(weights) != entry["sha256"]:
            raise CheckpointError(f"{source}: {weights} is not the file this model was written with (SHA-256 "
                                  "differs): that member changed; rebuild this model from it")
        folders[str(prefix)] = weights.parent.resolve()
    return folders


def _weight_files(directory: PathLike) -> list[tuple[str, Path]]:
    # (prefix of the names, safetensors file): this folder's own, then each linked member's
    files = [("", _weights_path(directory))]
    files += [(prefix + ".", _weights_path(folder)) for prefix, folder in linked_folders(directory).items()]
    return files


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
