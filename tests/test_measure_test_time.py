"""tools/measure_test_time.py on tiny models and synthetic signals (no corpus needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import SR, build_tiny, load_tool, speechlike

from usef.metrics import si_sdr_imp


@pytest.fixture(scope="module")
def tool():
    return load_tool("measure_test_time")


def _signals():
    target = speechlike(1.5, SR, seed=1, f0=120.0)
    interferer = speechlike(1.5, SR, seed=2, f0=210.0)
    return target + 0.7 * interferer, speechlike(1.0, SR, seed=3, f0=120.0), target


def test_an_ensemble_of_one_model_twice_equals_its_own_passes(tool):
    # the same weights under two keys: every mix of three passes is the model's shifts=3 output,
    # whatever the keys, and the level match of identical outputs is a gain of exactly 1
    model = build_tiny(seed=0, identity="near").eval()
    mixture, reference, target = _signals()
    with torch.inference_mode():
        scores = tool.ensemble_scores({"d": model, "s4": model}, mixture, reference, target)
        condition = model.prepare_condition(torch.from_numpy(reference)[None], torch.tensor([len(reference)]))
        shipped = model.extract(torch.from_numpy(mixture)[None], condition, shifts=3)[0].numpy()
    assert set(scores) == {"d3", "s4_3", "d2+s4", "d3+s4_3"}
    for name in ("s4_3", "d2+s4", "d3+s4_3"):
        assert scores[name] == pytest.approx(scores["d3"], abs=1e-4)
    assert scores["d3"] == pytest.approx(si_sdr_imp(shipped, target, mixture), abs=1e-3)


def test_level_matching_undoes_a_member_trained_at_another_gain(tool):
    model = build_tiny(seed=0, identity="near").eval()
    louder = build_tiny(seed=0, identity="near").eval()
    louder.decoder_gain = 20.0
    original = louder.extract
    louder.extract = lambda x, c, shifts=1: original(x, c, shifts=shifts) * louder.decoder_gain
    mixture, reference, target = _signals()
    with torch.inference_mode():
        scores = tool.ensemble_scores({"d": model, "s4": louder}, mixture, reference, target)
    assert scores["d2+s4"] == pytest.approx(scores["d3"], abs=1e-4)


def test_self_enrollment_scores_every_variant_and_the_baseline_is_one_pass(tool):
    model = build_tiny(seed=1).eval()
    mixture, reference, target = _signals()
    with torch.inference_mode():
        scores = tool.self_enroll_scores(model, mixture, reference, target)
        condition = model.prepare_condition(torch.from_numpy(reference)[None], torch.tensor([len(reference)]))
        one = model.extract(torch.from_numpy(mixture)[None], condition)[0].numpy()
    assert set(scores) == {"base", "shifts2", "estimate_only", "concat", "pooled", "average_first_pooled"}
    assert all(np.isfinite(v) for v in scores.values())
    assert scores["base"] == pytest.approx(si_sdr_imp(one, target, mixture), abs=1e-4)


def test_cli_writes_per_item_scores(tool, tmp_path):
    model = build_tiny(seed=0)
    model.save_pretrained(tmp_path / "m")
    rows = ["id,mixture,reference,target"]
    for i in range(2):
        mixture, reference, target = _signals()
        for kind, wave in (("mixture", mixture), ("reference", reference), ("target", target)):
            sf.write(tmp_path / f"{kind}{i}.wav", wave, SR)
        rows.append(f"{i},mixture{i}.wav,reference{i}.wav,target{i}.wav")
    (tmp_path / "eval.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out.json"
    assert tool.main(["self-enroll", "--list", str(tmp_path / "eval.csv"), "--model", str(tmp_path / "m"),
                      "--limit", "1", "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["baseline"] == "base" and len(written["scores"]["pooled"]) == 1


@pytest.mark.parametrize("models", [["s4=m"], ["d=m", "x=m"], ["m"]])
def test_ensemble_cli_refuses_models_without_the_anchor_or_unknown_keys(tool, tmp_path, models):
    with pytest.raises(SystemExit) as stop:
        tool.main(["ensemble", "--list", str(tmp_path / "eval.csv"), "--model", *models,
                   "--out", str(tmp_path / "out.json")])
    assert stop.value.code == 2


def test_residual_mode_scores_the_output_the_swap_and_an_oracle(tool):
    model = build_tiny(seed=2).eval()
    target = speechlike(1.5, SR, seed=1, f0=120.0)
    interferer = 0.7 * speechlike(1.5, SR, seed=2, f0=210.0)
    reference = speechlike(1.0, SR, seed=3, f0=120.0)
    mixture = target + interferer
    with torch.inference_mode():
        scores = tool.residual_scores(model, mixture, reference, target, interferer)
        condition = model.prepare_condition(torch.from_numpy(reference)[None], torch.tensor([len(reference)]))
        x = torch.from_numpy(mixture)[None]
        output = model.extract(x, condition, shifts=3)[:, : x.shape[1]]
        leak = model.extract(x - output, condition, shifts=3)[0].numpy()
    assert scores["base"] == pytest.approx(si_sdr_imp(output[0].numpy(), target, mixture), abs=1e-4)
    assert scores["leak"] == pytest.approx(si_sdr_imp(leak, target, mixture), abs=1e-4)
    assert scores["oracle"] >= scores["base"] and scores["confused"] in (0.0, 1.0)
    swaps = [v for k, v in scores.items() if k.startswith("swap_")]
    assert len(swaps) == len(tool.SWAP_MARGINS_DB)
    assert all(v in (scores["base"], scores["leak"]) for v in swaps)
