"""Shared feature encoder applied to both the mixture and the reference."""

from __future__ import annotations

import torch
from torch import nn


def valid_mask(lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """``(B,)`` valid lengths -> ``(B, max_length)`` bool mask, True on valid (unpadded) entries."""
    return torch.arange(max_length, device=lengths.device)[None, :] < lengths[:, None]


def masked_group_norm(
    x: torch.Tensor, frame_mask: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> torch.Tensor:
    """One-group GroupNorm whose statistics use valid frames only.

    Padded frames of a batch then leave every item's statistics exactly those of the item alone.

    Shape:
        x ``(B, C, T, ...)``, frame_mask ``(B, T)`` (1 valid, 0 padded) -> ``(B, C, T, ...)``.
    """
    mask = frame_mask.to(x.dtype).view(x.shape[0], 1, x.shape[2], *([1] * (x.dim() - 3)))
    per_frame = x[0, :, 0].numel()  # C times the trailing sizes
    count = mask.sum(dim=tuple(range(1, x.dim())), keepdim=True) * per_frame
    mean = (x * mask).sum(dim=tuple(range(1, x.dim())), keepdim=True) / count
    var = ((x - mean).pow(2) * mask).sum(dim=tuple(range(1, x.dim())), keepdim=True) / count
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return (x - mean) * torch.rsqrt(var + eps) * weight.view(shape) + bias.view(shape)


class FeatureEncoder(nn.Module):
    """Conv2d over (time, frequency) followed by a one-group GroupNorm (USEF / TF-GridNet front end).

    The same instance (same weights) encodes the mixture and the reference, which is what lets
    the cross attention compare their frames directly.

    Args:
        channels: output channels ``C``.
        kernel_size: square kernel over (time, frequency); odd, so shapes are kept.

    Shape:
        ``(B, 2, T, F)`` and an optional ``(B, T)`` frame mask -> ``(B, C, T, F)``. With a mask,
        padded input frames must be zero (they then act as the conv's own zero padding) and the
        normalisation statistics ignore them.
    """

    def __init__(self, channels: int = 128, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd to keep (T, F), got {kernel_size}")
        self.conv = nn.Conv2d(2, channels, kernel_size, padding=kernel_size // 2)
        self.norm = nn.GroupNorm(1, channels, eps=1e-5)

    def forward(self, spec: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        # (B, 2, T, F)
        features = self.conv(spec)
        if frame_mask is None:
            return self.norm(features)
        return masked_group_norm(features, frame_mask, self.norm.weight, self.norm.bias, self.norm.eps)
        # (B, C, T, F)
