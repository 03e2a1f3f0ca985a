"""Checkpoint averaging: the mean of several checkpoints' weights as one model.

Averaging the few best checkpoints of a run (by dev SI-SDRi recorded in each checkpoint's
``meta.json``) usually gives a small, free gain over the single best one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

import torch

from usef.checkpoint import (
    load_pretrained,
    load_state,
    read_config,
    read_weights,
    save_pretrained,
)
from usef.train import state

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]


def select_checkpoints(exp_dir: PathLike, best: int = 0, last: int = 0) -> list[Path]:
    """The ``best`` highest-scoring (dev SI-SDRi) or the ``last`` newest checkpoints of a run.

    Best-first (or newest-first) order. Raises ValueError when the run has no suitable
    checkpoint; with fewer than asked, all are used and a warning is logged.
    """
    if (best > 0) == (last > 0):
        raise ValueError(f"give exactly one of best > 0 or last > 0, got best={best}, last={last}")
    ckpts = state.list_checkpoints(Path(exp_dir))
    if last:
        chosen = list(reversed(ckpts))[:last]
        wanted = last
    else:
        scored = [(state.dev_score(state.read_meta(c)), c) for c in ckpts]
        scored = [(s, c) for s, c in scored if s is not None]
        # ties go to the later checkpoint
        chosen = [c for _, c in sorted(scored, key=lambda x: (-x[0], -_step(x[1])))][:best]
        wanted = best
    if not chosen:
        kind = "with a dev score " if best else ""
        raise ValueError(f"exp_dir {exp_dir} has no checkpoint {kind}under checkpoints/")
    if len(chosen) < wanted:
        logger.warning("asked for %d checkpoints, %s has only %d: averaging those", wanted, exp_dir, len(chosen))
    return chosen


def _step(path: Path) -> int:
    return int(path.name.split("_")[-1])


def raw_weights(checkpoint: PathLike) -> dict[str, torch.Tensor]:
    """The raw weights of a checkpoint of a run that kept a weight average (``train.ema_decay``):
    its ``model.safetensors`` holds the average, ``train_state.pt`` the weights the optimizer moved.

    Raises ValueError when the checkpoint holds none (its run kept no average: its model file
    already is the raw weights).
    """
    saved = state.load_train_state(Path(checkpoint))
    if "raw_weights" not in saved:
        raise ValueError(f"checkpoint {checkpoint} holds no raw weights: its run kept no weight average "
                         "(train.ema_decay), so its model.safetensors already is them")
    return saved["raw_weights"]


def average_state_dicts(directories: Sequence[PathLike], raw: bool = False) -> dict[str, torch.Tensor]:
    """Element-wise mean (accumulated in float64) of the floating-point tensors of the
    checkpoints' ``model.safetensors`` (with ``raw``: of their :func:`raw_weights`); other
    tensors are taken from the first one.

    Raises ValueError when the checkpoints do not hold the same tensor names and shapes.
    """
    if not directories:
        raise ValueError("directories must name at least one checkpoint")
    read = raw_weights if raw else read_weights
    first = read(directories[0])
    sums = {k: v.double() if v.is_floating_point() else v for k, v in first.items()}
    for directory in directories[1:]:
        other = read(directory)
        if set(other) != set(first) or any(other[k].shape != first[k].shape for k in first):
            raise ValueError(f"checkpoint {directory} does not match {directories[0]} (names or shapes differ)")
        for key, value in other.items():
            if value.is_floating_point():
                sums[key] += value.double()
    n = len(directories)
    return {k: (sums[k] / n).to(first[k].dtype) if first[k].is_floating_point() else sums[k] for k in first}


def average_checkpoints(directories: Sequence[PathLike], out_dir: PathLike,
                        info: dict[str, Any] | None = None, raw: bool = False) -> Path:
    """Write the average of ``directories`` to ``out_dir`` as a ``save_pretrained`` folder.

    The model is rebuilt from the first checkpoint's ``config.yaml``; ``info`` is recorded
    under ``averaged`` in the output's config. ``raw``: see :func:`average_state_dicts`.
    """
    model = load_pretrained(directories[0])
    load_state(model, average_state_dicts(directories, raw), source="averaged weights", strict=True)
    record = {"checkpoints": [str(Path(d).name) for d in directories], **({"raw_weights": True} if raw else {}),
              **(info or {})}
    # what the sources say about how they were trained holds for their average too
    kept = {key: model_attr for key in ("output_level", "confidence")
            if (model_attr := read_config(directories[0]).get(key)) is not None}
    return save_pretrained(model, out_dir, extra={**kept, "averaged": record})


def average_best(exp_dir: PathLike, best: int = 0, last: int = 0, out_dir: PathLike | None = None,
                 raw: bool = False) -> Path:
    """Average the ``best`` (or ``last``) checkpoints of a run; default output
    ``EXP/average_best<N>`` (or ``average_last<N>``; ``_raw`` appended with ``raw``). Checkpoints
    are chosen by their dev score, which is the weight average's when the run kept one."""
    chosen = select_checkpoints(exp_dir, best=best, last=last)
    scores = [state.dev_score(state.read_meta(c)) for c in chosen]
    name = (f"average_best{best}" if best else f"average_last{last}") + ("_raw" if raw else "")
    out = Path(out_dir) if out_dir else Path(exp_dir) / name
    logger.info("averaging %s%s into %s", [c.name for c in chosen], " (raw weights)" if raw else "", out)
    return average_checkpoints(chosen, out, {"dev_si_sdr_imp": scores}, raw=raw)
