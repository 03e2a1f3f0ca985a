"""Weight averaging in training (``train.ema_decay``): known answers, checkpoints, exact resume."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tests.test_train import _config, _speech_pack
from usef.checkpoint import load_pretrained
from usef.train import state
from usef.train.config import resolve_config
from usef.train.ema import WeightAverage
from usef.train.trainer import train


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    return _speech_pack(tmp_path_factory.mktemp("data") / "speech.npz")


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))


def _set(net: _Net, weight: list[float], bias: float, count: int) -> None:
    with torch.no_grad():
        net.linear.weight.copy_(torch.tensor([weight]))
        net.linear.bias.fill_(bias)
        net.count.fill_(count)


def test_weight_average_known_answers():
    net = _Net()
    _set(net, [1.0, 2.0], 0.0, 0)
    average = WeightAverage(net, decay=0.75, start_step=1)
    _set(net, [5.0, 6.0], 4.0, 1)
    average.update(net, step=1)  # not past start_step: a copy
    assert torch.equal(average.average["linear.weight"], torch.tensor([[5.0, 6.0]]))
    _set(net, [9.0, 2.0], 0.0, 2)
    average.update(net, step=2)  # 0.75 * old + 0.25 * new
    assert torch.allclose(average.average["linear.weight"], torch.tensor([[6.0, 5.0]]))
    assert torch.allclose(average.average["linear.bias"], torch.tensor([3.0]))
    assert int(average.average["count"]) == 2  # integers are copied, never averaged

    raw = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(RuntimeError, match="inside"), average.swapped_in(net):
        assert torch.allclose(net.linear.weight, torch.tensor([[6.0, 5.0]]))
        raise RuntimeError("inside")
    assert all(torch.equal(raw[k], v) for k, v in net.state_dict().items())  # back, even after raising


def test_weight_average_rejects_bad_settings_and_foreign_tensors():
    with pytest.raises(ValueError, match=r"ema_decay must be in \[0, 1\)"):
        WeightAverage(_Net(), decay=1.0)
    with pytest.raises(ValueError, match="ema_start_step"):
        WeightAverage(_Net(), decay=0.9, start_step=-1)
    with pytest.raises(ValueError, match="does not fit the model"):
        WeightAverage(_Net(), decay=0.9).load_state_dict({"other.weight": torch.zeros(1)})
    for bad in (1.0, -0.1, True, "0.99"):
        with pytest.raises(ValueError, match="train.ema_decay"):
            resolve_config(_config("x.npz", ema_decay=bad))
    with pytest.raises(ValueError, match="train.ema_start_step"):
        resolve_config(_config("x.npz", ema_decay=0.9, ema_start_step=-2))


def test_training_keeps_the_average_in_checkpoints_and_the_raw_weights_in_the_state(pack, tmp_path, one_thread):
    exp = tmp_path / "exp"
    decay = 0.5
    result = train(_config(pack, max_steps=4, save_every=1, keep_last_k=10, dev_every=2,
                           ema_decay=decay, ema_start_step=1), exp)
    ckpts = state.list_checkpoints(exp)
    assert [c.name for c in ckpts] == ["step_1", "step_2", "step_3", "step_4"]
    raw = [state.load_train_state(c)["raw_weights"] for c in ckpts]
    shipped = [load_file(str(c / "model.safetensors")) for c in ckpts]
    # the average by hand from the raw weights of each step: a copy at step 1, then halves
    expected = {k: v.clone() for k, v in raw[0].items()}
    for k in range(4):
        if k:
            expected = {n: decay * expected[n] + (1 - decay) * raw[k][n] for n in expected}
        floats = [n for n in shipped[k] if shipped[k][n].is_floating_point()]
        assert all(torch.allclose(shipped[k][n], expected[n], atol=1e-7) for n in floats)
    assert not all(torch.equal(shipped[3][n], raw[3][n]) for n in shipped[3])  # it is not the raw copy
    # the dev curve scores both; best/ and the returned model are the average
    devs = [r for r in state.RunLog(exp).records() if "dev_si_sdr_imp" in r]
    assert [r["step"] for r in devs] == [2, 4]
    assert all("dev_raw_si_sdr_imp" in r for r in devs)
    best = load_pretrained(exp / "best").state_dict()
    best_step = result.best["step"]
    assert all(torch.equal(best[n], shipped[best_step - 1][n]) for n in best)
    returned = result.model.state_dict()
    assert all(torch.equal(returned[n], shipped[3][n]) for n in returned)


def test_resume_continues_the_average_exactly(pack, tmp_path, one_thread):
    settings = {"decay": "constant", "ema_decay": 0.8, "save_every": 3}
    whole = train(_config(pack, max_steps=6, **settings), tmp_path / "whole")
    train(_config(pack, max_steps=3, **settings), tmp_path / "split")
    split = train(_config(pack, max_steps=6, **settings), tmp_path / "split", resume=True)
    assert split.step == 6
    for name in ("whole", "split"):
        assert "raw_weights" in state.load_train_state(tmp_path / name / "checkpoints" / "step_6")
    a, b = whole.model.state_dict(), split.model.state_dict()
    assert all(torch.equal(a[n], b[n]) for n in a)
    ra = state.load_train_state(tmp_path / "whole" / "checkpoints" / "step_6")["raw_weights"]
    rb = state.load_train_state(tmp_path / "split" / "checkpoints" / "step_6")["raw_weights"]
    assert all(torch.equal(ra[n], rb[n]) for n in ra)


def test_usef_average_raw_exports_the_raw_weights_and_refuses_runs_without_an_average(pack, tmp_path, one_thread,
                                                                                        capsys):
    from usef.bin.average import main

    exp = tmp_path / "exp"
    train(_config(pack, max_steps=2, save_every=1, keep_last_k=5, ema_decay=0.9), exp)
    assert main([str(exp), "--last", "2", "--raw", "--out", str(tmp_path / "raw")]) == 0
    assert "(raw weights)" in capsys.readouterr().out
    raws = [state.load_train_state(c)["raw_weights"] for c in state.list_checkpoints(exp)]
    written = load_file(str(tmp_path / "raw" / "model.safetensors"))
    floats = [n for n in written if written[n].is_floating_point()]
    assert all(torch.allclose(written[n], (raws[0][n] + raws[1][n]) / 2, atol=1e-7) for n in floats)
    assert main([str(exp), "--last", "1"]) == 0  # without --raw: the average, as before
    shipped = load_file(str(exp / "checkpoints" / "step_2" / "model.safetensors"))
    assert all(torch.equal(load_file(str(exp / "average_last1" / "model.safetensors"))[n], shipped[n]) for n in shipped)

    plain = tmp_path / "plain"
    train(_config(pack, max_steps=1), plain)
    assert main([str(plain), "--last", "1", "--raw"]) == 2
    assert "holds no raw weights" in capsys.readouterr().err
