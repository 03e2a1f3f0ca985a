"""Scaled dot-product attention that picks the faster CPU kernel for bf16 training.

torch 2.13's fused CPU kernel (``_scaled_dot_product_flash_attention_for_cpu``) is slow in bf16
at this project's sizes, in its backward pass most (one thread, forward + backward): the
Conformer's self-attention ``(16, 4, 188, 48)`` 90 ms against 31 ms for the explicit
``softmax(q k^T) v``; the USEF cross attention ``(16, 4, 188 x 250, 516)`` with a key mask
277 ms against 146 ms. Under bf16 autocast the cross attention's tokens arrive in fp32 (they
are layer-normed), so the fused kernel ran it in fp32 (353 ms), while the explicit products
are autocast to bf16. The explicit path is therefore taken only for CPU training under bf16
(bf16 inputs or bf16 autocast, autograd recording); fp32 training, inference, ONNX export and
CUDA keep the fused kernel, so inference outputs do not change. Whole training steps, side by
side: ``tools/profile_train_step.py --variants bf16-fused bf16`` (numbers in the README).

The explicit path takes its softmax in float32 and returns the inputs' dtype, like the fused
kernel. Against an fp32 step of the 8 kHz default, the bf16 gradients differ by 3.2 % (explicit)
and 2.8 % (fused) in relative norm; the loss by 2e-4 dB and 1.2e-3 dB.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator

import torch
from torch.nn import functional as F_

_FUSED_ONLY = contextvars.ContextVar("usef_fused_attention_only", default=False)


@contextlib.contextmanager
def fused_attention_only() -> Iterator[None]:
    """Inside this block :func:`attention` always calls torch's fused kernel (the numerics and
    speed of training before the explicit path existed; used by ``tools/profile_train_step.py``)."""
    token = _FUSED_ONLY.set(True)
    try:
        yield
    finally:
        _FUSED_ONLY.reset(token)


def _use_explicit(query: torch.Tensor) -> bool:
    if _FUSED_ONLY.get() or query.device.type != "cpu" or not (torch.is_grad_enabled() and query.requires_grad):
        return False
    # fp32 inputs under bf16 autocast (the cross attention's layer-normed tokens) run the fused
    # kernel in fp32; the explicit products are autocast to bf16
    return query.dtype == torch.bfloat16 or (
        torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)


def attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    allowed: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """``softmax(q k^T / sqrt(E)) v``, as :func:`torch.nn.functional.scaled_dot_product_attention`.

    Args:
        allowed: optional boolean mask broadcastable to ``(B, L, T_q, T_k)``, True where a
            query may attend to a key (SDPA's boolean ``attn_mask``).

    Shape:
        query ``(B, L, T_q, E)``, key ``(B, L, T_k, E)``, value ``(B, L, T_k, V)`` ->
        ``(B, L, T_q, V)``.
    """
    if not _use_explicit(query):
        return F_.scaled_dot_product_attention(query, key, value, attn_mask=allowed, dropout_p=dropout_p)
    scores = torch.matmul(query, key.transpose(-1, -2)).float() * (1.0 / math.sqrt(query.shape[-1]))
    # (B, L, T_q, T_k)
    blocked = None if allowed is None else ~allowed
    if blocked is not None:
        scores = scores.masked_fill(blocked, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if blocked is not None:  # a row with no allowed key: zeros, as the fused kernel gives (not NaN)
        weights = weights.masked_fill(blocked, 0.0)
    if dropout_p > 0.0:
        weights = F_.dropout(weights, p=dropout_p)
    return torch.matmul(weights.to(value.dtype), value)
