"""usef.modules.attention: the explicit bf16 training path against torch's fused kernel."""

from __future__ import annotations

import pytest
import torch
from conftest import build_tiny
from torch.nn import functional as F_

from usef.modules import attention as attention_module
from usef.modules.attention import attention, fused_attention_only


def _qkv(seed: int, batch=2, heads=2, t_q=7, t_k=9, e=6, v=5):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, t_q, e, generator=g)
    k = torch.randn(batch, heads, t_k, e, generator=g)
    val = torch.randn(batch, heads, t_k, v, generator=g)
    return q, k, val


def _calls_explicit(monkeypatch) -> list:
    calls = []
    original = attention_module._use_explicit

    def spy(query):
        chosen = original(query)
        calls.append(chosen)
        return chosen

    monkeypatch.setattr(attention_module, "_use_explicit", spy)
    return calls


def test_inference_and_fp32_training_use_the_fused_kernel_exactly(monkeypatch):
    q, k, v = _qkv(0)
    allowed = torch.ones(2, 1, 1, 9, dtype=torch.bool)
    allowed[1, ..., 6:] = False
    calls = _calls_explicit(monkeypatch)
    with torch.no_grad():
        assert torch.equal(attention(q, k, v, allowed), F_.scaled_dot_product_attention(q, k, v, attn_mask=allowed))
    q.requires_grad_(True)
    assert torch.equal(attention(q, k, v, allowed), F_.scaled_dot_product_attention(q, k, v, attn_mask=allowed))
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        attention(q, k, v)  # autocast inference: fused too
    assert calls == [False, False, False]


@pytest.mark.parametrize("masked", [False, True])
def test_explicit_path_under_autocast_matches_fp32_values_and_gradients(monkeypatch, masked):
    q, k, v = (x.requires_grad_(True) for x in _qkv(1))
    allowed = None
    if masked:
        allowed = torch.ones(2, 1, 1, 9, dtype=torch.bool)
        allowed[0, ..., 4:] = False
    reference = F_.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    ref_grads = torch.autograd.grad(reference.square().sum(), (q, k, v))
    calls = _calls_explicit(monkeypatch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(q, k, v, allowed)
    assert calls == [True]
    assert out.dtype == torch.bfloat16
    grads = torch.autograd.grad(out.float().square().sum(), (q, k, v))
    torch.testing.assert_close(out.float(), reference, atol=0.05, rtol=0.05)
    for got, want in zip(grads, ref_grads):
        assert float((got - want).norm() / want.norm()) < 0.05


def test_explicit_path_ignores_masked_keys_and_fused_context_restores_the_kernel(monkeypatch):
    q, k, v = (x.bfloat16().requires_grad_(True) for x in _qkv(2))
    allowed = torch.ones(2, 1, 1, 9, dtype=torch.bool)
    allowed[1, ..., 5:] = False
    out = attention(q, k, v, allowed)
    k2, v2 = k.detach().clone(), v.detach().clone()
    k2[1, :, 5:] = 50.0
    v2[1, :, 5:] = -50.0
    assert torch.equal(attention(q, k2, v2, allowed), out)  # padded keys/values change nothing
    single = attention(q[1:], k[1:, :, :5], v[1:, :, :5])
    torch.testing.assert_close(out[1:], single, atol=1e-2, rtol=0)  # batch with padding == the item alone
    calls = _calls_explicit(monkeypatch)
    with fused_attention_only():
        fused = attention(q, k, v, allowed)
    attention(q, k, v, allowed)
    assert calls == [False, True]  # the context ends with its block
    torch.testing.assert_close(fused.float(), out.float(), atol=0.03, rtol=0.03)


@pytest.mark.parametrize("name", ["usef_conformer", "usef_tfgridnet"])
def test_bf16_training_step_explicit_vs_fused(monkeypatch, name):
    """The whole model's bf16 training step: the explicit path is taken and lands where the
    fused kernel does (loss and gradients within bf16 noise of each other)."""
    model = build_tiny(name).train()
    g = torch.Generator().manual_seed(3)
    mixture, reference = torch.randn(2, 4000, generator=g), torch.randn(2, 3000, generator=g)
    reference_lengths = torch.tensor([3000, 2200])

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(mixture, reference, reference_lengths).float().square().mean()
        grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])
        return float(loss.detach()), torch.cat([x.flatten() for x in grads])

    calls = _calls_explicit(monkeypatch)
    loss, grads = step()
    assert calls and all(calls)
    with fused_attention_only():
        fused_loss, fused_grads = step()
    assert abs(loss - fused_loss) <= 0.02 * abs(fused_loss)
    assert float((grads - fused_grads).norm() / fused_grads.norm()) < 0.05


def test_a_query_with_no_allowed_key_gets_zeros_like_the_fused_kernel():
    q, k, v = (x.requires_grad_(True) for x in _qkv(4))
    allowed = torch.ones(2, 1, 1, 9, dtype=torch.bool)
    allowed[1] = False
    fused = F_.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention(q, k, v, allowed)
    assert torch.equal(fused[1], torch.zeros_like(fused[1])) and torch.equal(out[1].float(), fused[1])
    grads = torch.autograd.grad(out.float().sum(), (q, k, v))
    assert all(bool(torch.isfinite(g).all()) for g in grads)
