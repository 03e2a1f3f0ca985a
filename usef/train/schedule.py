"""Learning-rate schedule: linear warm-up, then cosine or exponential decay.

The schedule is a pure function of the optimizer step, so resuming needs nothing but the
step counter; ``WarmupDecay.state_dict()`` holds only primitives (safe for
``torch.load(..., weights_only=True)``).

We use warm-up + decay instead of the USEF paper's ReduceLROnPlateau because a plateau
scheduler reacts to a noisy validation loss (its state depends on the dev history, which
makes runs of different lengths incomparable), whereas a step-indexed schedule is
reproducible, resumes exactly and works with a fixed wall-clock/step budget.
"""

from __future__ import annotations

import math
from typing import Any

import torch

DECAYS = ("cosine", "exponential", "constant")


def lr_at(
    step: int,
    base_lr: float,
    warmup_steps: int,
    max_steps: int,
    decay: str = "cosine",
    min_lr: float = 0.0,
) -> float:
    """Learning rate for optimizer step ``step`` (0-based: the first update uses ``step=0``).

    Warm-up rises linearly from ``base_lr / warmup_steps`` to ``base_lr`` over
    ``warmup_steps`` updates; afterwards ``decay`` goes from ``base_lr`` to ``min_lr`` at
    ``max_steps``: ``cosine`` (half cosine), ``exponential`` (geometric interpolation, a
    constant factor per step) or ``constant``.
    """
    if decay not in DECAYS:
        raise ValueError(f"decay must be one of {DECAYS}, got {decay!r}")
    if base_lr <= 0:
        raise ValueError(f"base_lr must be > 0, got {base_lr}")
    if not 0 <= min_lr <= base_lr:
        raise ValueError(f"min_lr must be in [0, base_lr={base_lr}], got {min_lr}")
    if warmup_steps < 0 or max_steps < 1:
        raise ValueError(f"need warmup_steps >= 0 and max_steps >= 1, got {warmup_steps}, {max_steps}")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if decay == "constant":
        return base_lr
    span = max(max_steps - warmup_steps, 1)
    progress = min(max((step - warmup_steps) / span, 0.0), 1.0)
    if decay == "cosine":
        return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))
    # Geometric interpolation cannot reach exactly zero; treat min_lr=0 as 1e-3 * base_lr.
    floor = min_lr if min_lr > 0 else base_lr * 1e-3
    return base_lr * (floor / base_lr) ** progress


def steps_within_budget(step: int, steps_this_run: int, elapsed_s: float, budget_s: float, max_steps: int,
                        margin: float = 0.97) -> int:
    """The last step a run reaches inside ``budget_s`` wall-clock seconds at the pace it has kept.

    The pace is ``elapsed_s / steps_this_run`` (this process's steps, with its data waits, dev
    passes and checkpoints), so a decay planned from it ends when the budget does rather than
    being cut off half-way; ``margin`` leaves a little for the last dev pass and checkpoint.
    The result lies in ``[step, max_steps]``; ``step`` itself means: no further step fits, stop now.
    """
    if steps_this_run < 1 or elapsed_s <= 0 or budget_s <= 0:
        return max_steps
    pace = elapsed_s / steps_this_run
    more = int((margin * budget_s - elapsed_s) // pace)
    return int(min(max_steps, max(step, step + more)))


class WarmupDecay:
    """Sets the learning rate of every parameter group of ``optimizer`` from ``lr_at``.

    Call ``step()`` once after each optimizer update. All groups share one schedule scaled
    by their initial ``lr`` relative to ``base_lr``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        base_lr: float,
        warmup_steps: int,
        max_steps: int,
        decay: str = "cosine",
        min_lr: float = 0.0,
    ) -> None:
        self.optimizer = optimizer
        self.base_lr = float(base_lr)
        self.warmup_steps = int(warmup_steps)
        self.max_steps = int(max_steps)
        self.decay = decay
        self.min_lr = float(min_lr)
        self.scales = [group["lr"] / self.base_lr for group in optimizer.param_groups]
        self.last_step = 0
        lr_at(0, self.base_lr, self.warmup_steps, self.max_steps, self.decay, self.min_lr)  # validate
        self._apply()

    def current_lr(self) -> float:
        """Learning rate the next update will use (before group scaling)."""
        return lr_at(self.last_step, self.base_lr, self.warmup_steps, self.max_steps, self.decay, self.min_lr)

    def _apply(self) -> None:
        lr = self.current_lr()
        for scale, group in zip(self.scales, self.optimizer.param_groups):
            group["lr"] = lr * scale

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    def set_max_steps(self, max_steps: int) -> None:
        """Move the end of the decay (a run fitting its schedule to a time budget)."""
        if int(max_steps) < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.max_steps = int(max_steps)
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        return {
            "last_step": self.last_step,
            "base_lr": self.base_lr,
            "warmup_steps": self.warmup_steps,
            "max_steps": self.max_steps,
            "decay": self.decay,
            "min_lr": self.min_lr,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the step counter; the shape of the schedule comes from the current config,
        so a resumed run may extend ``max_steps`` (the curve is then recomputed)."""
        self.last_step = int(state["last_step"])
        self._apply()
