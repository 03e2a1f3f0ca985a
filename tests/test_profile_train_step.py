"""tools/profile_train_step.py: data variants (reference length per example or per batch) and model variants."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
import torch
import yaml
from conftest import load_tool, speechlike

from usef.train.master_weights import MasterWeights

REPO = Path(__file__).resolve().parents[1]
profile = load_tool("profile_train_step")


def test_variant_names_parse_and_bad_ones_are_refused():
    assert profile._variant("bf16") == ("bf16", None, {})
    assert profile._variant("fp32:batch") == ("fp32", "batch", {})
    assert profile._variant("bf16@encoder_channels=8,separator_args.num_layers=3") == (
        "bf16", None, {"encoder_channels": 8, "separator_args.num_layers": 3})
    for bad in ("bf8", "bf16:batches", "fp32:x"):
        with pytest.raises(Exception, match="want one of"):
            profile._variant(bad)
    with pytest.raises(Exception, match="KEY=VALUE"):
        profile._variant("bf16@encoder_channels")
    with pytest.raises(SystemExit):
        profile.main(["config.yaml", "--variants", "bf16:sometimes"])


def test_item_and_batch_reference_lengths_run_side_by_side(tmp_path, one_thread):
    for k in range(4):  # four speakers, two 3 s recordings each
        folder = tmp_path / "speech" / f"spk{k}"
        folder.mkdir(parents=True)
        for j in range(2):
            sf.write(folder / f"{j}.wav", speechlike(3.0, seed=10 * k + j, f0=100 + 30 * k), 8000)
    cfg = yaml.safe_load((REPO / "egs/speakers/conf/tiny.yaml").read_text())
    cfg["data"].update(speech=str(tmp_path / "speech"), dev_speakers=0)
    cfg["train"]["batch_size"] = 4
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "profile.json"
    smaller = "fp32:batch@separator_args.ffn_dim=8"  # the tiny preset has 32
    assert profile.main([str(config), "--steps", "1", "--warmup", "0", "--variants", "fp32:item", "fp32:batch",
                         smaller, "bf16-weights:batch", "--json", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"fp32:item", "fp32:batch", smaller, "bf16-weights:batch"}
    assert all(r["step"] > 0 and r["forward"] > 0 for r in results.values())
    assert results[smaller]["parameters_millions"] < results["fp32:batch"]["parameters_millions"]


def test_bf16_weights_step_is_taken_on_fp32_masters():
    torch.manual_seed(0)
    master = torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.PReLU(), torch.nn.Linear(6, 1))
    before = [p.detach().clone() for p in master.parameters()]
    optimizer = torch.optim.AdamW(master.parameters(), lr=1e-2)
    masters = MasterWeights(master)
    batch = {"mixture": torch.randn(4, 6), "target": torch.randn(4, 1)}

    class Wrapped(torch.nn.Module):  # the tool calls model(mixture, reference, reference_lengths)
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, mixture, reference, lengths):
            return self.inner(mixture)

    def loss_fn(estimate, target, lengths):
        return ((estimate - target) ** 2).mean()

    times = profile._phase_times(Wrapped(masters.working), optimizer, loss_fn, {**batch, "reference": None},
                                 "bf16-weights", 5.0, masters)
    assert set(times) == {"forward", "backward", "optimizer"}
    assert all(m.dtype == torch.float32 for m in master.parameters())
    assert all(not torch.equal(m, b) for m, b in zip(master.parameters(), before))  # the masters moved
    for weight, m in zip(masters.working.parameters(), master.parameters()):  # and the bf16 weights follow
        assert weight.dtype == torch.bfloat16
        torch.testing.assert_close(weight, m.detach().to(torch.bfloat16), rtol=0, atol=0)
