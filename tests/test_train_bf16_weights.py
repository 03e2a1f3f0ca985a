"""Training with bf16 working weights and fp32 masters (``train.bf16_weights``)."""

from __future__ import annotations

import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.test_train import WORKER, _config, _run_group, _speech_pack, _write
from usef.train import state
from usef.train.config import resolve_config
from usef.train.master_weights import MasterWeights
from usef.train.runtime import cpu_has_native_bf16
from usef.train.trainer import train

native_bf16 = pytest.mark.skipif(not cpu_has_native_bf16(), reason="no native bf16 on this CPU: the mode is off")


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    return _speech_pack(tmp_path_factory.mktemp("data") / "speech.npz")


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)
        self.register_buffer("window", torch.tensor([0.1, 0.2]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def test_masters_keep_updates_that_bf16_weights_would_round_away():
    net = _Net()
    with torch.no_grad():
        net.linear.weight.fill_(1.0)
    masters = MasterWeights(net)
    assert masters.working.linear.weight.dtype == torch.bfloat16
    assert masters.working.window.dtype == torch.float32  # buffers are not trained: kept exact
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3)
    for _ in range(10):
        optimizer.zero_grad(set_to_none=True)
        masters.working(torch.ones(1, 2, dtype=torch.bfloat16)).sum().backward()
        masters.gradients_to_master()
        assert masters.working.linear.weight.grad is None  # moved, not copied
        assert net.linear.weight.grad.dtype == torch.float32
        optimizer.step()
        masters.weights_to_working()
    # ten steps of 1e-3 below 1.0: each alone is under half a bf16 step (2^-8), so a bf16 weight
    # updated in place would still read 1.0; the master holds 0.99 and the copy its rounding
    assert torch.allclose(net.linear.weight, torch.full((1, 2), 0.99), atol=1e-6)
    assert torch.equal(masters.working.linear.weight, net.linear.weight.to(torch.bfloat16))
    bf16_in_place = torch.ones((), dtype=torch.bfloat16)
    for _ in range(10):
        bf16_in_place -= 1e-3
    assert float(bf16_in_place) == 1.0


def test_gradients_accumulate_on_the_masters():
    net = _Net()
    masters = MasterWeights(net)
    x = torch.tensor([[1.0, 2.0]], dtype=torch.bfloat16)
    for _ in range(2):  # two micro-batches
        masters.working(x).sum().backward()
        masters.gradients_to_master()
    assert torch.allclose(net.linear.weight.grad, torch.tensor([[2.0, 4.0]]))
    assert torch.allclose(net.linear.bias.grad, torch.tensor([2.0]))


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
    cfg_path = _write(tmp_path / "c.yaml", _config(pack, max_steps=3, bf16_cpu=True, bf16_weights=True))
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    code, err = _run_group([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                            str(worker), str(cfg_path), str(tmp_path / "exp"), "0", str(tmp_path)], timeout=120)
    assert code == 0, err[-3000:]
    r0 = load_file(str(tmp_path / "rank0.safetensors"))
    r1 = load_file(str(tmp_path / "rank1.safetensors"))
    assert all(r0[k].dtype == torch.float32 and torch.equal(r0[k], r1[k]) for k in r0)
