"""Jointly trained reference encoder that pools a reference to one speaker vector.

SpeakerBeam-style auxiliary network: frame features of the reference (from the extractor's
shared encoder), a few residual 1-D conv blocks over time, a masked mean over valid frames and a
Linear to the embedding size. It learns with the extractor, from scratch.
"""

from __future__ import annotations

import torch
from torch import nn

from usef.modules.encoder import masked_group_norm, valid_mask


class _ResidualConv(nn.Module):
    def __init__(self, dim: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2)
        self.act = nn.PReLU(dim)
        self.norm = nn.GroupNorm(1, dim)

    def forward(self, x: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        y = self.act(self.conv(x))
        if frame_mask is None:
            return x + self.norm(y)
        # padded frames are zeroed so the next conv sees what an unpadded item sees at its edge
        y = masked_group_norm(y, frame_mask, self.norm.weight, self.norm.bias, self.norm.eps)
        return (x + y) * frame_mask[:, None, :].to(y.dtype)


class SpeakerEncoder(nn.Module):
    """Reference features -> one vector per item.

    Args:
        in_channels: encoder channels ``C``.
        num_bins: frequency bins ``F`` (the input projection depends on it).
        hidden: width of the conv blocks.
        embedding_dim: output size ``E``.
        num_blocks: residual conv blocks.

    Shape:
        - features ``(B, C, T_ref, F)``; frame_lengths ``(B,)`` valid frames or None.
        - output ``(B, E)``.
    """

    def __init__(
        self, in_channels: int, num_bins: int, hidden: int = 256, embedding_dim: int = 256, num_blocks: int = 3
    ) -> None:
        super().__init__()
        self.input = nn.Conv1d(in_channels * num_bins, hidden, 1)
        self.blocks = nn.ModuleList(_ResidualConv(hidden, 3) for _ in range(num_blocks))
        self.output = nn.Linear(hidden, embedding_dim)

    def forward(self, features: torch.Tensor, frame_lengths: torch.Tensor | None = None) -> torch.Tensor:
        batch, channels, frames, bins = features.shape
        x = features.permute(0, 1, 3, 2).reshape(batch, channels * bins, frames)
        # (B, C*F, T_ref)
        valid = None
        if frame_lengths is not None:
            valid = valid_mask(frame_lengths, frames).to(x.dtype)
        x = self.input(x)
        if valid is not None:
            x = x * valid[:, None, :]
        for block in self.blocks:
            x = block(x, valid)
        # (B, hidden, T_ref)
        if valid is None:
            pooled = x.mean(dim=-1)
        else:
            pooled = (x * valid[:, None, :]).sum(-1) / valid.sum(-1, keepdim=True).clamp_min(1.0)
        return self.output(pooled)
        # (B, E)
