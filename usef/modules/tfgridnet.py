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
    """LayerNorm + BLSTM + Linear along one axis of channels-last ``(B, T, F, D)``, residual add.

    The BLSTM runs time-major (sequence axis first), the order its kernel works in: along time
    ``(T, B*F, D)`` is a view of the layout for batch size 1, along frequency ``(F, B*T, D)`` one
    strided copy. Its output is then contiguous, so the Linear is one matrix product; on a
    batch-first output (a transposed view) it became a batched product with the weight expanded
    and copied per sequence, which cost a quarter of a bf16 forward at the released size.

    Shape:
        ``(B, T, F, D)`` -> ``(B, T, F, D)``.
    """

    def __init__(self, channels: int, hidden: int, along_time: bool) -> None:
        super().__init__()
        self.along_time = along_time
        self.norm = nn.LayerNorm(channels)
        self.rnn = nn.LSTM(channels, hidden, bidirectional=True)
        self.proj = nn.Linear(2 * hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames, bins, channels = x.shape
        normed = self.norm(x)
        if self.along_time:
            seq = normed.transpose(0, 1).reshape(frames, batch * bins, channels)
        else:
            seq = normed.permute(2, 0, 1, 3).reshape(bins, batch * frames, channels)
        # (T, B*F, D) or (F, B*T, D), sequence axis first
        out = self.proj(self.rnn(seq)[0])
        if self.along_time:
            out = out.view(frames, batch, bins, channels).transpose(0, 1)
        else:
            out = out.view(bins, batch, frames, channels).permute(1, 2, 0, 3)
        # (B, T, F, D)
        return x + out


class GridNetBlock(nn.Module):
    """One TF-GridNet block, channels-last.

    Shape:
        ``(B, T, F, D)`` -> ``(B, T, F, D)``.
    """

    def __init__(self, channels: int, hidden: int, num_heads: int, qk_channels: int) -> None:
        super().__init__()
        self.intra = _AxisBLSTM(channels, hidden, along_time=False)
        self.inter = _AxisBLSTM(channels, hidden, along_time=True)
        self.attention = FullBandAttention(channels, num_heads, qk_channels, residual=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, T, F, D)
        x = self.inter(self.intra(x))
        return self.attention.self_attend_channels_last(x)


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
        x = self.input(x).permute(0, 2, 3, 1).contiguous()
        # (B, T, F, D): one layout for the whole stack (see usef/modules/tfgridnet_reference.py
        # for the same function in the (B, D, T, F) layout, which the tests compare against)
        for block in self.blocks:
            x = block(x)
        return self.output(x.permute(0, 3, 1, 2))
        # (B, 2, T, F)
