"""Full-band multi-head attention between frames of two T-F feature maps.

This is the attention layer of TF-GridNet (Wang et al., 2023) written so that queries and
keys/values may come from different signals: with ``query = mixture`` and
``key_value = reference`` it is USEF-TSE's cross multi-head attention (CMHA); with the same
tensor twice it is TF-GridNet's cross-frame self-attention.

Every frame is one token: per head, the ``E`` query/key channels (or ``C / L`` value channels)
are flattened together with all ``F`` frequency bins.

Deviations from the released USEF / TF-GridNet code, on purpose:
- ``qk_channels`` (``E``) is a fixed number instead of ``ceil(512 / F)`` and the layer norms
  have per-channel (not per-frequency) affine parameters, as in TF-GridNet v3. No weight
  depends on ``F``, so one checkpoint accepts any STFT size / sample rate. With the released
  8 kHz setting (F = 65, E = 8) the arithmetic is the same.
- A key padding mask: padded reference frames get zero attention, so a batch of references
  of different lengths gives the same output as running each item alone (the released code
  has no mask).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F_

from usef.modules.attention import attention


class FrameNorm(nn.Module):
    """Layer norm over (channels, frequency) of each frame and group, with per-channel affine.

    Shape:
        ``(B, G, K, T, F)`` -> same, normalised over ``K`` and ``F`` for every ``(b, g, t)``.
    """

    def __init__(self, groups: int, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, groups, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, groups, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 4), keepdim=True)
        var = (x - mean).pow(2).mean(dim=(2, 4), keepdim=True)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


class _Projection(nn.Module):
    """1x1 conv to ``groups * channels``, per-group PReLU, then :class:`FrameNorm`.

    :meth:`forward` returns the tokens directly. The norm runs as one fused ``layer_norm`` over
    the ``(K, F)`` of each token followed by the per-channel affine, on the token layout the
    attention needs anyway: :class:`FrameNorm`'s own forward (a chain of full-band
    element-wise passes, each a trip through memory) made the reference side of a training step
    memory-bound. Same function; the parameters stay in ``FrameNorm``, so checkpoints load as
    they are.

    Shape:
        ``(B, C_in, T, F)`` -> tokens ``(B, G, T, K*F)``, flattened channel-major.
    """

    def __init__(self, in_channels: int, groups: int, channels: int) -> None:
        super().__init__()
        self.groups, self.channels = groups, channels
        self.conv = nn.Conv2d(in_channels, groups * channels, 1)
        self.act = nn.PReLU(groups * channels)
        self.norm = FrameNorm(groups, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, frames, bins = x.shape
        y = self.act(self.conv(x)).view(batch, self.groups, self.channels, frames, bins)
        y = y.transpose(2, 3)
        # (B, G, T, K, F): normalised over (K, F) of each token
        if torch.onnx.is_in_onnx_export():
            # the exporter cannot take a normalised shape read off a dynamic input: the same
            # normalisation spelled out
            mean = y.mean(dim=(3, 4), keepdim=True)
            var = (y - mean).pow(2).mean(dim=(3, 4), keepdim=True)
            y = (y - mean) * torch.rsqrt(var + self.norm.eps)
        else:
            y = F_.layer_norm(y, (self.channels, bins), eps=self.norm.eps)
        weight = self.norm.weight.view(1, self.groups, 1, self.channels, 1)
        bias = self.norm.bias.view(1, self.groups, 1, self.channels, 1)
        y = torch.addcmul(bias, y, weight)
        return y.reshape(batch, self.groups, frames, self.channels * bins)

    def channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """The same projection on channels-last features: a matrix product, no convolution.

        Returns tokens flattened bin-major (``F*K`` instead of :meth:`forward`'s ``K*F``).
        PReLU runs as one kernel on a ``(N, C)`` view (its channel axis is then the last one),
        and the norm as one fused ``layer_norm`` over ``(F, K)`` on the token layout, whose
        copy the attention needs anyway: the spelled-out chain of element-wise passes took a
        fifth of a bf16 TF-GridNet forward.

        Shape:
            ``(B, T, F, C_in)`` -> tokens ``(B, G, T, F*K)``.
        """
        batch, frames, bins, _ = x.shape
        out_channels = self.conv.out_channels
        y = F_.linear(x, self.conv.weight.view(out_channels, -1), self.conv.bias)
        y = F_.prelu(y.reshape(-1, out_channels), self.act.weight)
        y = y.view(batch, frames, bins, self.groups, self.channels).permute(0, 3, 1, 2, 4)
        # (B, G, T, F, K): normalised over (F, K) of each token
        y = F_.layer_norm(y, (bins, self.channels), eps=self.norm.eps)
        weight = self.norm.weight.view(1, self.groups, 1, 1, self.channels)
        bias = self.norm.bias.view(1, self.groups, 1, 1, self.channels)
        y = torch.addcmul(bias, y, weight)
        return y.reshape(batch, self.groups, frames, bins * self.channels)


class FullBandAttention(nn.Module):
    """Multi-head attention whose tokens are whole frames (all channels and bins of a head).

    Args:
        channels: feature channels ``C`` of both inputs and of the output.
        num_heads: heads ``L``; ``C`` must be divisible by it.
        qk_channels: query/key channels per head ``E``.
        residual: add the query input to the output (TF-GridNet self-attention) or not
            (USEF CMHA, whose output is pure attended reference content).

    Shape:
        - query: ``(B, C, T_mix, F)``; key_value: ``(B, C, T_ref, F)``;
          key_padding_mask: ``(B, T_ref)`` bool, True marks a padded frame.
        - output: ``(B, C, T_mix, F)``.
    """

    def __init__(self, channels: int, num_heads: int = 4, qk_channels: int = 8, residual: bool = False) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels ({channels}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.residual = residual
        self.query = _Projection(channels, num_heads, qk_channels)
        self.key = _Projection(channels, num_heads, qk_channels)
        self.value = _Projection(channels, num_heads, channels // num_heads)
        self.merge = _Projection(channels, 1, channels)

    def project_key_value(self, key_value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values, flattened per frame; computed once per reference.

        Shape:
            ``(B, C, T_ref, F)`` -> keys ``(B, L, T_ref, E*F)``, values ``(B, L, T_ref, (C/L)*F)``.
        """
        if torch.is_autocast_enabled(key_value.device.type):
            # cast once for both 1x1 convs (autocast would copy the full-band map for each)
            key_value = key_value.to(torch.get_autocast_dtype(key_value.device.type))
        # (B, L, T_ref, K*F) each
        return self.key(key_value), self.value(key_value)

    def attend(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attention from query frames to pre-projected keys/values (see :meth:`project_key_value`)."""
        batch, channels, frames, bins = query.shape
        queries = self.query(query)
        # (B, L, T_mix, E*F)
        mask = None
        if key_padding_mask is not None:
            # (B, 1, 1, T_ref): True where attention is allowed.
            mask = (~key_padding_mask)[:, None, None, :]
        attended = attention(queries, keys, values, mask)
        # (B, L, T_mix, (C/L)*F) -> (B, C, T_mix, F)
        attended = attended.view(batch, self.num_heads, frames, channels // self.num_heads, bins)
        attended = attended.permute(0, 1, 3, 2, 4).reshape(batch, channels, frames, bins)
        out = self.merge(attended).view(batch, frames, channels, bins).transpose(1, 2)
        # (B, C, T_mix, F)
        return out + query if self.residual else out

    def forward(
        self,
        query: torch.Tensor,
        key_value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        keys, values = self.project_key_value(key_value)
        return self.attend(query, keys, values, key_padding_mask)

    def self_attend_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """Self-attention (TF-GridNet's cross-frame module) on channels-last features.

        The same function as ``forward(x, x)`` on the ``(B, C, T, F)`` layout, without its
        permute copies: tokens are flattened bin-major (``F*K`` instead of ``K*F``), which
        changes only the order of the terms in each dot product.

        Shape:
            ``(B, T, F, C)`` -> ``(B, T, F, C)``.
        """
        batch, frames, bins, channels = x.shape
        queries = self.query.channels_last(x)
        keys = self.key.channels_last(x)
        values = self.value.channels_last(x)
        # (B, L, T, F*K)
        attended = attention(queries, keys, values)
        attended = attended.view(batch, self.num_heads, frames, bins, channels // self.num_heads)
        attended = attended.permute(0, 2, 3, 1, 4).reshape(batch, frames, bins, channels)
        # (B, T, F, C), channel = head * (C/L) + k as in the (B, C, T, F) path
        out = self.merge.channels_last(attended).view(batch, frames, bins, channels)
        return out + x if self.residual else out

