"""Training with bf16 working weights and fp32 masters (``train.bf16_weights``)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tests import test_train
from tests.test_train import _config, train_two_ranks
from usef.train import state
from usef.train.config import resolve_config
from usef.train.master_weights import MasterWeights
from usef.train.runtime import cpu_has_native_bf16
from usef.train.trainer import train

pack = test_train.pack  # the trainer tests' speech pack fixture
native_bf16 = pytest.mark.skipif(not cpu_has_native_bf16(), reason="no native bf16 on this CPU: the mode is off")


def _net() -> torch.nn.Linear:
    """A linear map with a float buffer beside its parameters (as the STFT's window)."""
    net = torch.nn.Linear(2, 1)
    net.register_buffer("window", torch.tensor([0.1, 0.2]))
    return net


def test_masters_keep_updates_that_bf16_weights_would_round_away():
    net = _net()
    with torch.no_grad():
        net.weight.fill_(1.0)
    masters = MasterWeights(net)
    assert masters.working.weight.dtype == torch.bfloat16
    assert masters.working.window.dtype == torch.float32  # buffers are not trained: kept exact
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3)
    for _ in range(10):
        optimizer.zero_grad(set_to_none=True)
        masters.working(torch.ones(1, 2, dtype=torch.bfloat16)).sum().backward()
        masters.gradients_to_master()
        assert masters.working.weight.grad is None  # moved, not copied
        assert net.weight.grad.dtype == torch.float32
        optimizer.step()
        masters.weights_to_working()
    # ten steps of 1e-3 below 1.0: each alone is under half a bf16 step (2^-8), so a bf16 weight
    # updated in place would still read 1.0; the master holds 0.99 and the copy its rounding
    assert torch.allclose(net.weight, torch.full((1, 2), 0.99), atol=1e-6)
    assert torch.equal(masters.working.weight, net.weight.to(torch.bfloat16))
    bf16_in_place = torch.ones((), dtype=torch.bfloat16)
    for _ in range(10):
        bf16_in_place -= 1e-3
    assert float(bf16_in_place) == 1.0


def test_gradients_accumulate_on_the_masters():
    net = _net()
    masters = MasterWeights(net)
    x = torch.tensor([[1.0, 2.0]], dtype=torch.bfloat16)
    for _ in range(2):  # two micro-batches
        masters.working(x).sum().backward()
        masters.gradients_to_master()
    assert torch.allclose(net.weight.grad, torch.tensor([[2.0, 4.0]]))
    assert torch.allclose(net.bias.grad, torch.tensor([2.0]))


def test_config_errors(pack, tmp_path):
    with pytest.raises(ValueError, match="train.bf16_weights must be true or false"):
        resolve_config(_config(pack, bf16_weights="yes"))
    with pytest.raises(ValueError, match="set train.bf16_cpu: true"):
        train(_config(pack, bf16_weights=True, max_steps=1), tmp_path / "exp")


@native_bf16
def test_a_run_learns_like_autocast_alone_and_saves_fp32(pack, tmp_path, one_thread):
    settings = {"bf16_cpu": True, "max_steps": 12, "save_every": 12, "decay": "constant"}
    plain = train(_config(pack, **settings), tmp_path / "plain")
    held = train(_config(pack, bf16_weights=True, **settings), tmp_path / "held")
    saved = load_file(str(tmp_path / "held" / "checkpoints" / "step_12" / "model.safetensors"))
    assert all(v.dtype == torch.float32 for v in saved.values())  # the masters are what is saved
    returned = held.model.state_dict()
    assert all(torch.equal(returned[k], saved[k]) for k in saved)
    loss = {name: [r["loss"] for r in state.RunLog(tmp_path / name).records() if "loss" in r]
            for name in ("plain", "held")}
    # step 1 sees the same batch through weights autocast would have rounded anyway: only
    # biases and norm gains differ by their bf16 rounding
    assert abs(loss["held"][0] - loss["plain"][0]) < 0.05
    assert loss["held"] != loss["plain"]  # the mode is on: the working weights are bf16
    assert loss["held"][-1] < loss["held"][0] - 1.0  # it learns
    a, b = plain.model.state_dict(), held.model.state_dict()
    drift = sum(float((a[k] - b[k]).norm()) for k in a) / sum(float(a[k].norm()) for k in a)
    assert drift < 0.05, drift  # the same run up to rounding, not a different one


@native_bf16
def test_resume_is_exact_with_masters(pack, tmp_path, one_thread):
    settings = {"bf16_cpu": True, "bf16_weights": True, "decay": "constant", "save_every": 3}
    whole = train(_config(pack, max_steps=6, **settings), tmp_path / "whole")
    train(_config(pack, max_steps=3, **settings), tmp_path / "split")
    split = train(_config(pack, max_steps=6, **settings), tmp_path / "split", resume=True)
    a, b = whole.model.state_dict(), split.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@native_bf16
def test_two_process_ddp_ranks_agree_with_masters(pack, tmp_path):
    r0, r1 = train_two_ranks(_config(pack, max_steps=3, bf16_cpu=True, bf16_weights=True), tmp_path)
    assert all(r0[k].dtype == torch.float32 and torch.equal(r0[k], r1[k]) for k in r0)
