"""Output-gain calibration of a model before a fine-tune with a level-dependent loss.

A model trained with a scale-invariant loss (negative SI-SDR) has an arbitrary output level:
the bundled ``usef-conformer-8k`` comes out +13.7 dB above its targets (median of 80 held-out
items). Switching its objective to one that weighs level (``neg_snr``, target-absent silence)
then starts at an SNR of about -14 dB, and the first hundreds of steps spend their updates on
that one gain: a fine-tune at 5e-5 lost 1.4 dB of SI-SDRi on the trainer's dev items in 150
steps. The last layer of every separator is linear in its output (the mask or the mapped
spectrum, then a linear iSTFT), so scaling its weight and bias by ``g`` scales the waveform by
exactly ``g``: the level can be set before training without changing anything else.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from usef.modules.encoder import valid_mask

logger = logging.getLogger(__name__)


def output_layer(model: nn.Module) -> nn.Module:
    """The separator's last layer (``separator.output``), whose weight and bias set the gain."""
    layer = getattr(getattr(model, "separator", None), "output", None)
    if layer is None or getattr(layer, "weight", None) is None or getattr(layer, "bias", None) is None:
        raise ValueError(f"{type(model).__name__} has no separator.output layer with a weight and a bias to scale")
    return layer


def level_error_db(
    model: nn.Module,
    batches: Iterable[dict[str, Any]],
    forward: Callable[[nn.Module, dict[str, Any]], torch.Tensor],
) -> torch.Tensor:
    """Output level minus target level, in dB, of every target-present item of ``batches``.

    Shape:
        returns ``(N,)`` over the present items of all batches.
    """
    errors = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                estimate = forward(model, batch).float()
                target = batch["target"].float()
                # (B, T)
                lengths = batch.get("lengths")
                if lengths is not None:
                    keep = valid_mask(lengths.to(target.device), target.shape[-1]).to(target.dtype)
                    estimate, target = estimate * keep, target * keep
                present = batch.get("target_present")
                rows = (torch.ones(target.shape[0], dtype=torch.bool, device=target.device) if present is None
                        else present.to(target.device).bool())
                ratio = (estimate[rows] ** 2).sum(-1) / ((target[rows] ** 2).sum(-1) + 1e-12)
                errors.append(10.0 * torch.log10(ratio + 1e-12))
    finally:
        model.train(was_training)
    if not errors or sum(len(e) for e in errors) == 0:
        raise ValueError("output-gain calibration needs at least one target-present item")
    return torch.cat(errors)


def scale_output(model: nn.Module, gain_db: float) -> None:
    """Multiply the model's output waveform by ``10^(gain_db/20)`` (in place, exact)."""
    layer = output_layer(model)
    gain = 10.0 ** (gain_db / 20.0)
    with torch.no_grad():
        layer.weight.mul_(gain)
        layer.bias.mul_(gain)


def calibrate_output_gain(
    model: nn.Module,
    batches: Iterable[dict[str, Any]],
    forward: Callable[[nn.Module, dict[str, Any]], torch.Tensor],
) -> float:
    """Scale the output so that the median level error on ``batches`` becomes 0 dB.

    Returns the applied gain in dB (the negated median error before calibration).
    """
    errors = level_error_db(model, batches, forward)
    gain_db = -float(errors.median())
    if not math.isfinite(gain_db):
        raise ValueError(f"output-gain calibration measured a non-finite level error ({gain_db})")
    scale_output(model, gain_db)
    logger.info("output gain calibrated by %+.2f dB (median level error over %d items; spread %.2f dB)",
                gain_db, len(errors), float(errors.std()) if len(errors) > 1 else 0.0)
    return gain_db
