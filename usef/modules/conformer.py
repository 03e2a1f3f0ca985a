"""Conformer separator over frames: the light, CPU-class separator.

Each T-F feature frame is flattened over (channels, frequency) and projected to ``D``; a stack
of Conformer layers (Gulati et al., 2020: half-step feed-forward, self-attention, convolution,
half-step feed-forward, LayerNorm) models time; a Linear maps back to ``2 F`` real/imaginary
values per frame.

Deviations from the Conformer paper, on purpose:
- LayerNorm instead of BatchNorm in the convolution module, so that an item's output never
  depends on the other items of its batch (batch == single) or on train/eval statistics.
- No positional encoding: the depth-wise convolution gives relative position, and the model then
  behaves the same on any chunk of a long recording.
The in/out projections depend on ``F``. A wide-band model whose low bins are the narrow-band
model's bins (same Hz per bin, e.g. 16 kHz / 512 and 8 kHz / 256) starts from the narrow-band
weights: :meth:`ConformerSeparator.widen_state` copies them into the low bins and zeroes the
rest, so that before any training the wide-band model hears the low band as the narrow-band
model did and (with a mask output) passes nothing above it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F_

from usef.modules.attention import attention


class _FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.SiLU(), nn.Dropout(dropout),
            nn.Linear(hidden, dim), nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.dropout = dropout
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames, dim = x.shape
        qkv = self.qkv(self.norm(x)).view(batch, frames, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        # (B, heads, T, D/heads)
        y = attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(batch, frames, dim))


class _ConvModule(nn.Module):
    def __init__(self, dim: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.pointwise_in = nn.Linear(dim, 2 * dim)
        self.depthwise = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.depthwise_norm = nn.LayerNorm(dim)
        self.pointwise_out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F_.glu(self.pointwise_in(self.norm(x)), dim=-1)
        # (B, T, D) -> (B, D, T) for the depth-wise conv along time
        y = self.depthwise(y.transpose(1, 2)).transpose(1, 2)
        y = self.pointwise_out(F_.silu(self.depthwise_norm(y)))
        return self.dropout(y)


class ConformerLayer(nn.Module):
    """One Conformer layer.

    Shape:
        ``(B, T, D)`` -> ``(B, T, D)``.
    """

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.ffn1 = _FeedForward(dim, ffn_dim, dropout)
        self.attention = _SelfAttention(dim, num_heads, dropout)
        self.conv = _ConvModule(dim, kernel_size, dropout)
        self.ffn2 = _FeedForward(dim, ffn_dim, dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.ffn1(x)
        x = x + self.attention(x)
        x = x + self.conv(x)
        x = x + 0.5 * self.ffn2(x)
        return self.norm(x)


class ConformerSeparator(nn.Module):
    """Frame-level Conformer separator.

    Args:
        in_channels: channels ``C_in`` of the conditioned T-F features.
        num_bins: frequency bins ``F`` (fixed by the STFT; the in/out projections depend on it).
        dim: model width ``D``.
        num_layers, num_heads, ffn_dim, kernel_size, dropout: Conformer hyper-parameters.

    Shape:
        ``(B, C_in, T, F)`` -> ``(B, 2, T, F)`` (real, imaginary).
    """

    def __init__(
        self,
        in_channels: int = 32,
        num_bins: int = 129,
        dim: int = 192,
        num_layers: int = 6,
        num_heads: int = 4,
        ffn_dim: int = 384,
        kernel_size: int = 15,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_bins = num_bins
        self.input = nn.Sequential(nn.Linear(in_channels * num_bins, dim), nn.LayerNorm(dim))
        self.layers = nn.ModuleList(
            ConformerLayer(dim, num_heads, ffn_dim, kernel_size, dropout) for _ in range(num_layers)
        )
        self.output = nn.Linear(dim, 2 * num_bins)

    def widen_state(self, state: dict[str, torch.Tensor], prefix: str = "") -> list[str]:
        """Zero-extend narrow-band in/out projection weights in ``state`` (in place) to ``F`` bins.

        A checkpoint built for ``F_old < F`` bins (the first ``F_old`` of this model's bins, same
        Hz per bin: the caller checks) gets its ``(D, C_in*F_old)`` input and ``(2*F_old, D)``
        output weights copied into the low bins of zero tensors of this model's shapes.
        Returns the names widened.
        """
        in_weight = self.input[0].weight
        channels = in_weight.shape[1] // self.num_bins
        widened = []
        key = prefix + "input.0.weight"
        if key in state and state[key].shape != in_weight.shape:
            old = state[key]
            old_bins, rest = divmod(old.shape[1], channels)
            if rest or old.shape[0] != in_weight.shape[0] or old_bins >= self.num_bins:
                return widened
            new = old.new_zeros(in_weight.shape[0], channels, self.num_bins)
            new[:, :, :old_bins] = old.view(old.shape[0], channels, old_bins)
            state[key] = new.view_as(in_weight)
            widened.append(key)
            for name in ("output.weight", "output.bias"):
                key = prefix + name
                if key not in state or state[key].shape[0] != 2 * old_bins:
                    continue
                old = state[key]
                new = old.new_zeros(2, self.num_bins, *old.shape[1:])
                new[:, :old_bins] = old.view(2, old_bins, *old.shape[1:])
                state[key] = new.view(2 * self.num_bins, *old.shape[1:])
                widened.append(key)
        return widened

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, frames, bins = x.shape
        if bins != self.num_bins:
            raise ValueError(f"ConformerSeparator was built for F={self.num_bins} bins, got F={bins}")
        # (B, C_in, T, F) -> (B, T, C_in*F)
        h = self.input(x.permute(0, 2, 1, 3).reshape(batch, frames, channels * bins))
        # (B, T, D)
        for layer in self.layers:
            h = layer(h)
        out = self.output(h).view(batch, frames, 2, bins)
        return out.permute(0, 2, 1, 3)
        # (B, 2, T, F)
