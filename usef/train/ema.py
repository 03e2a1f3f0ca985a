"""Exponential moving average of a model's weights (``train.ema_decay``).

On this project's CPU the learning rate of a continuation has to stay small and its steps are
few, so the last weights of a run carry the noise of its last mini-batches: the mean of its two
best checkpoints beat its last one by 0.26 dB on the trainer's dev set (stage 13b, the 8 kHz
card). An average kept at every step gets that for every checkpoint, not only afterwards.

The average starts from the weights the run starts with (``init_from`` or the initialisation)
once ``train.ema_start_step`` is reached; before that it follows the raw weights. With
``ema_decay = d`` a step's weights count ``(1 - d) d^k`` after ``k`` more steps: ``d = 0.998``
averages over about the last 500 steps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["WeightAverage", "check_settings"]


def check_settings(decay: object, start_step: object) -> None:
    """Raise ValueError unless ``decay`` is None (no average) or a number in ``[0, 1)`` and
    ``start_step`` a non-negative integer (``train.ema_decay``, ``train.ema_start_step``; checked
    when the config is resolved, before any data is built, and by :class:`WeightAverage`)."""
    if decay is not None and (isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= float(decay) < 1.0):
        raise ValueError(f"train.ema_decay must be in [0, 1) (or null: no average), got {decay!r}")
    if isinstance(start_step, bool) or not isinstance(start_step, int) or start_step < 0:
        raise ValueError(f"train.ema_start_step must be a non-negative integer, got {start_step!r}")


class WeightAverage:
    """Running average ``avg = d * avg + (1 - d) * w`` of every floating-point parameter and buffer.

    Args:
        model: the (unwrapped) model whose weights are averaged; the average starts as a copy.
        decay: ``d`` in ``[0, 1)``; 0 keeps a copy of the last weights.
        start_step: updates before this optimizer step copy the weights instead of averaging.

    Integer buffers are copied, not averaged. ``state_dict`` / ``load_state_dict`` hold the
    average's tensors (same names as the model's) for checkpoints.
    """

    def __init__(self, model: torch.nn.Module, decay: float, start_step: int = 0) -> None:
        if decay is None:
            raise ValueError("a weight average needs a decay in [0, 1)")
        check_settings(decay, start_step)
        self.decay = float(decay)
        self.start_step = int(start_step)
        self.average = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        """Fold the weights after optimizer step ``step`` (1-based) into the average."""
        weight = 1.0 - self.decay if step > self.start_step else 1.0
        for name, tensor in model.state_dict().items():
            average = self.average[name]
            if average.is_floating_point():
                average.lerp_(tensor.detach().to(average.dtype), weight)
            else:
                average.copy_(tensor)

    @contextlib.contextmanager
    def swapped_in(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """Run a block (dev pass, saving) with the average in ``model``; the raw weights come back
        afterwards, bit for bit, even if the block raises."""
        raw = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
        model.load_state_dict(self.average)
        try:
            yield model
        finally:
            model.load_state_dict(raw)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: tensor.clone() for name, tensor in self.average.items()}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.average) - set(tensors))
        unexpected = sorted(set(tensors) - set(self.average))
        if missing or unexpected:
            raise ValueError(f"weight average does not fit the model: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
        for name, tensor in tensors.items():
            self.average[name].copy_(tensor)
