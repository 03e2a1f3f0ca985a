"""TF-GridNet separator (Wang et al., TASLP 2023; the "v2" block layout USEF-TSE uses).

Each block runs, with a residual add after each:
1. intra-frame full-band module: a BLSTM along frequency for every frame;
2. sub-band temporal module: a BLSTM along time for every frequency bin;
3. cross-frame self-attention (:class:`~usef.modules.cross_attention.FullBandAttention`).

Deviations from the published code, on purpose:
- Only the ``I = J = 1`` unfolding (kernel 1, stride 1) of the v2 block is implemented, which is
  the setting of the released USEF-TFGridNet; the BLSTM output goes through a Linear back to ``D``.
- Attention norms carry per-channel, not per-frequency, parameters and ``E`` is fixed (see
  ``cross_attention.py``), so no weight depends on ``F``: the same separator runs at 8 or 16 kHz.
"""

from __future__ import annotations

import torch
from torch import nn

from usef.modules.cross_attention import FullBandAttention


class _AxisBLSTM(nn.Module):
    """LayerNorm + BLSTM + Linear along one axis of ``(B, D, T, F)``, with a residual add.

    Shape:
        ``(B, D, T, F)`` -> ``(B, D, T, F)``.
    """

    def __init__(self, channels: int, hidden: int, along_time: bool) -> None:
        super().__init__()
        self.along_time = along_time
        self.norm = nn.LayerNorm(channels)
        self.rnn = nn.LSTM(channels, hidden, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(2 * hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, frames, bins = x.shape
        if self.along_time:
            seq = x.permute(0, 3, 2, 1).reshape(batch * bins, frames, channels)
        else:
            seq = x.permute(0, 2, 3, 1).reshape(batch * frames, bins, channels)
        # (B*F, T, D) or (B*T, F, D)
        out = self.proj(self.rnn(self.norm(seq))[0])
        if self.along_time:
            out = out.view(batch, bins, frames, channels).permute(0, 3, 2, 1)
        else:
            out = out.view(batch, frames, bins, channels).permute(0, 3, 1, 2)
        # (B, D, T, F)
        return x + out


class GridNetBlock(nn.Module):
    """One TF-GridNet block.

    Shape:
        ``(B, D, T, F)`` -> ``(B, D, T, F)``.
    """

    def __init__(self, channels: int, hidden: int, num_heads: int, qk_channels: int) -> None:
        super().__init__()
        self.intra = _AxisBLSTM(channels, hidden, along_time=False)
        self.inter = _AxisBLSTM(channels, hidden, along_time=True)
        self.attention = FullBandAttention(channels, num_heads, qk_channels, residual=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inter(self.intra(x))
        return self.attention(x, x)


class TFGridNetSeparator(nn.Module):
    """Stack of TF-GridNet blocks with a ConvTranspose2d output head (complex spectral mapping).

    Args:
        in_channels: channels of the conditioned features entering the separator.
        channels: block width ``D``; a 1x1 conv maps ``in_channels`` to ``D`` when they differ
            (USEF concatenates ``[M; S]`` so ``in_channels == D`` and no conv is added).
        num_blocks: number of blocks.
        hidden: BLSTM units per direction ``H``.
        num_heads: attention heads ``L``.
        qk_channels: query/key channels per head ``E``.

    Shape:
        ``(B, C_in, T, F)`` -> ``(B, 2, T, F)`` (real, imaginary).
    """

    def __init__(
        self,
        in_channels: int = 256,
        channels: int = 256,
        num_blocks: int = 6,
        hidden: int = 256,
        num_heads: int = 4,
        qk_channels: int = 8,
    ) -> None:
        super().__init__()
        self.input = nn.Identity() if in_channels == channels else nn.Conv2d(in_channels, channels, 1)
        self.blocks = nn.ModuleList(
            GridNetBlock(channels, hidden, num_heads, qk_channels) for _ in range(num_blocks)
        )
        self.output = nn.ConvTranspose2d(channels, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, C_in, T, F)
        x = self.input(x)
        # (B, D, T, F)
        for block in self.blocks:
            x = block(x)
        return self.output(x)
        # (B, 2, T, F)
