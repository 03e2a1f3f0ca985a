"""Training losses on waveform batches: negative SI-SDR and negative SNR, and the
energy loss for mixtures in which the target does not speak.

Both follow ``usef.metrics`` exactly (same ``eps`` placement), so the training
curve and the evaluation table report the same number with opposite sign.
Per-item ``lengths`` mask out right padding: a padded item gives the same loss
as the unpadded one.
"""

from __future__ import annotations

import torch

from usef.modules.encoder import valid_mask

# the names train.loss may take (loss per target-present item)
__all__ = ["neg_si_sdr", "neg_si_sdr_level", "neg_snr"]
# the losses that also train the output level (checkpoints then say output_level: calibrated)
LEVEL_TRAINING = ("neg_si_sdr_level", "neg_snr")

_REDUCTIONS = ("mean", "none")


def _check(estimate: torch.Tensor, target: torch.Tensor, reduction: str) -> None:
    if estimate.dim() != 2:
        raise ValueError(
            f"estimate must have shape (B, T), got {tuple(estimate.shape)}"
        )
    if estimate.shape != target.shape:
        raise ValueError(
            f"estimate and target must have the same shape, got {tuple(estimate.shape)} and {tuple(target.shape)}"
        )
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _mask(estimate: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor | None:
    """(B, T) float mask with ones on valid samples, or None when nothing is padded."""
    if lengths is None:
        return None
    lengths = torch.as_tensor(lengths, device=estimate.device)
    batch, time = estimate.shape
    if lengths.shape != (batch,):
        raise ValueError(
            f"lengths must have shape ({batch},), got {tuple(lengths.shape)}"
        )
    if bool((lengths <= 0).any()) or bool((lengths > time).any()):
        raise ValueError(f"lengths must lie in [1, {time}], got {lengths.tolist()}")
    return valid_mask(lengths, time).to(estimate.dtype)


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    return values.mean() if reduction == "mean" else values


def neg_si_sdr(
    estimate: torch.Tensor,
    target: torch.Tensor,
    lengths: torch.Tensor | None = None,
    zero_mean: bool = True,
    eps: float = 1e-8,
    reduction: str = "mean",
) -> torch.Tensor:
    """Negative scale-invariant SDR in dB, averaged over the batch.

    ``lengths`` gives each item's valid length; samples beyond it are ignored,
    including when removing the mean. ``reduction="none"`` returns one value per item.

    Shape:
        estimate, target: (B, T); lengths: (B,) int64
        returns: () for ``reduction="mean"``, (B,) for ``"none"``
    """
    _check(estimate, target, reduction)
    mask = _mask(estimate, lengths)
    if mask is not None:
        estimate = estimate * mask
        target = target * mask
    if zero_mean:
        count = mask.sum(dim=1, keepdim=True) if mask is not None else estimate.shape[1]
        estimate = estimate - estimate.sum(dim=1, keepdim=True) / count
        target = target - target.sum(dim=1, keepdim=True) / count
        if mask is not None:
            # removing the mean made the padding non-zero again
            estimate = estimate * mask
            target = target * mask
    alpha = (estimate * target).sum(dim=1, keepdim=True) / (
        (target * target).sum(dim=1, keepdim=True) + eps
    )
    projection = alpha * target
    residual = estimate - projection
    ratio = ((projection**2).sum(dim=1) + eps) / ((residual**2).sum(dim=1) + eps)
    return _reduce(-10.0 * torch.log10(ratio), reduction)


def neg_snr(
    estimate: torch.Tensor,
    target: torch.Tensor,
    lengths: torch.Tensor | None = None,
    eps: float = 1e-8,
    reduction: str = "mean",
) -> torch.Tensor:
    """Negative SNR in dB, ``-10 log10(|target|^2 / |target - estimate|^2)``.

    Unlike SI-SDR this penalises a wrong output level, which matters when the
    extracted speech is played back without normalisation.

    Shape:
        estimate, target: (B, T); lengths: (B,) int64
        returns: () for ``reduction="mean"``, (B,) for ``"none"``
    """
    _check(estimate, target, reduction)
    mask = _mask(estimate, lengths)
    error = target - estimate
    if mask is not None:
        error = error * mask
        target = target * mask
    ratio = ((target**2).sum(dim=1) + eps) / ((error**2).sum(dim=1) + eps)
    return _reduce(-10.0 * torch.log10(ratio), reduction)


def neg_si_sdr_level(
    estimate: torch.Tensor,
    target: torch.Tensor,
    lengths: torch.Tensor | None = None,
    level_weight: float = 0.3,
    reduction: str = "mean",
) -> torch.Tensor:
    """Negative SI-SDR plus ``level_weight`` times the output level error in dB,
    ``|10 log10(|est|^2 / |target|^2)|``.

    The SI-SDR term is the scale-invariant objective the bundled models were trained with; the
    level term only fixes the output gain (one scalar the masking model sets easily), so the
    level comes to mean something (silence for an absent target, beside :func:`absent_energy`)
    without turning the shape objective into SNR.

    Shape:
        estimate, target: (B, T); lengths: (B,) int64
        returns: () for ``reduction="mean"``, (B,) for ``"none"``
    """
    shape = neg_si_sdr(estimate, target, lengths, reduction="none")
    mask = _mask(estimate, lengths)
    if mask is not None:
        estimate, target = estimate * mask, target * mask
    level = 10.0 * torch.log10(((estimate**2).sum(dim=1) + 1e-8) / ((target**2).sum(dim=1) + 1e-8))
    return _reduce(shape + level_weight * level.abs(), reduction)


def absent_energy(
    estimate: torch.Tensor,
    mixture: torch.Tensor,
    lengths: torch.Tensor | None = None,
    floor_db: float = -30.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Output energy relative to the mixture, ``10 log10(|est|^2 / |mix|^2 + 10^(floor_db/10))``
    in dB: the loss of an item whose target is absent (its reference talker does not speak),
    where the right output is silence.

    Relative to the mixture, so the loss does not depend on the mixture's level; the floor
    stops the push once the output is ``-floor_db`` dB below the mixture, so silent outputs
    are not bought with ever larger weights. Only meaningful beside a scale-dependent loss on
    target-present items (``neg_snr``): beside a scale-invariant one, shrinking every output
    would satisfy it.

    Shape:
        estimate, mixture: (B, T); lengths: (B,) int64
        returns: () for ``reduction="mean"``, (B,) for ``"none"``
    """
    _check(estimate, mixture, reduction)
    mask = _mask(estimate, lengths)
    if mask is not None:
        estimate = estimate * mask
        mixture = mixture * mask
    ratio = (estimate**2).sum(dim=1) / ((mixture**2).sum(dim=1) + 1e-8)
    return _reduce(10.0 * torch.log10(ratio + 10.0 ** (floor_db / 10.0)), reduction)


def tse_loss(
    estimate: torch.Tensor,
    batch: dict,
    present_loss: str = "neg_si_sdr",
    absent_floor_db: float = -30.0,
) -> torch.Tensor:
    """The batch loss: ``present_loss`` on items whose target speaks, :func:`absent_energy` on
    those with ``batch["target_present"] == 0``; the mean over all items.

    Shape:
        estimate, batch["target"], batch["mixture"]: (B, T); batch["target_present"]: (B,)
        returns: ()
    """
    if present_loss not in __all__:
        raise ValueError(f"present_loss must be one of {__all__}, got {present_loss!r}")
    lengths = batch.get("lengths")
    per_item = globals()[present_loss](estimate, batch["target"], lengths, reduction="none")
    present = batch.get("target_present")
    if present is None:
        return per_item.mean()
    absent = absent_energy(estimate, batch["mixture"], lengths, absent_floor_db, reduction="none")
    return torch.where(present.to(per_item.device).bool(), per_item, absent).mean()
