"""A plain TF-GridNet forward, kept as the reference the optimised separator is checked against.

:class:`~usef.modules.tfgridnet.TFGridNetSeparator` runs its blocks channels-last (one layout
for the whole stack, 1x1 convolutions as matrix products, no permute copies between the
sub-modules). This module computes the same function the straightforward way, in the
``(B, D, T, F)`` layout of the published code: each BLSTM gets a permuted copy, the attention
goes through :class:`~usef.modules.cross_attention.FullBandAttention` as USEF's CMHA does.
It reads the separator's own parameters, so a test (and ``tools/benchmark.py
--compare-reference``) can compare the two on the same weights.
"""

from __future__ import annotations

import torch
from torch import nn


def _batch_first_lstm(rnn: nn.LSTM, seq: torch.Tensor) -> torch.Tensor:
    # The published call, a batch-first BLSTM, on the shipped module's weights (built time-major):
    # the flag is only read at call time, and the kernel's path (its own transposes and copies)
    # is part of what the reference times.
    rnn.batch_first = True
    try:
        return rnn(seq)[0]
    finally:
        rnn.batch_first = False


def _axis_blstm_reference(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # (B, D, T, F) -> (B, D, T, F)
    batch, channels, frames, bins = x.shape
    if module.along_time:
        seq = x.permute(0, 3, 2, 1).reshape(batch * bins, frames, channels)
    else:
        seq = x.permute(0, 2, 3, 1).reshape(batch * frames, bins, channels)
    out = module.proj(_batch_first_lstm(module.rnn, module.norm(seq)))
    if module.along_time:
        out = out.reshape(batch, bins, frames, channels).permute(0, 3, 2, 1)
    else:
        out = out.reshape(batch, frames, bins, channels).permute(0, 3, 1, 2)
    return x + out


def reference_forward(separator: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The separator's function computed plainly.

    Shape:
        ``(B, C_in, T, F)`` -> ``(B, 2, T, F)``.
    """
    x = separator.input(x)
    # (B, D, T, F)
    for block in separator.blocks:
        x = _axis_blstm_reference(block.intra, x)
        x = _axis_blstm_reference(block.inter, x)
        x = block.attention(x, x)
    return separator.output(x)
    # (B, 2, T, F)
