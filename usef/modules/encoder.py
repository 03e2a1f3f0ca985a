"""Shared feature encoder applied to both the mixture and the reference."""

from __future__ import annotations

import torch
from torch import nn


class FeatureEncoder(nn.Module):
    """Conv2d over (time, frequency) followed by a one-group GroupNorm (USEF / TF-GridNet front end).

    The same instance (same weights) encodes the mixture and the reference, which is what lets
    the cross attention compare their frames directly.

    Args:
        channels: output channels ``C``.
        kernel_size: square kernel over (time, frequency); odd, so shapes are kept.

    Shape:
        ``(B, 2, T, F)`` -> ``(B, C, T, F)``.
    """

    def __init__(self, channels: int = 128, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd to keep (T, F), got {kernel_size}")
        self.conv = nn.Conv2d(2, channels, kernel_size, padding=kernel_size // 2)
        self.norm = nn.GroupNorm(1, channels, eps=1e-5)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        # (B, 2, T, F)
        return self.norm(self.conv(spec))
        # (B, C, T, F)
