"""Target-absent mixtures (data, loss, trainer dev metrics, usef eval) and the output confidence."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from usef import audio
from usef.confidence import ConfidenceMap, choose_threshold, features, fit, roc_auc
from usef.data import DynamicMixDataset, SpeakerCorpus
from usef.data.splits import write_eval_set
from usef.evaluate import confidence_summary, evaluate_list, read_eval_list
from usef.metrics import level_db
from usef.train import losses

SR = 8000


def _voice(f0: float, seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.03 * np.sin(2 * np.pi * 0.5 * t))) / SR
    wave = sum(np.sin(k * phase) / k for k in range(1, 8))
    return (0.2 * wave + 0.002 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def corpus() -> SpeakerCorpus:
    f0s = {"a": 100.0, "b": 130.0, "c": 180.0, "d": 240.0}
    return SpeakerCorpus.from_arrays({s: [_voice(f, 6.0, i)] for i, (s, f) in enumerate(f0s.items())}, SR)


# --------------------------------------------------------------------------- data
def test_absent_items_are_silent_targets_and_the_others_unchanged(corpus):
    plain = DynamicMixDataset(corpus, seed=11, segment_seconds=1.0)
    mixed = DynamicMixDataset(corpus, seed=11, segment_seconds=1.0, p_target_absent=0.5)
    flags = []
    for i in range(24):
        ex, ref = mixed[i], plain[i]
        flags.append(ex["target_present"])
        assert "target_present" not in ref  # the key only exists when absent targets can occur
        np.testing.assert_array_equal(ex["reference"], ref["reference"])  # whose voice: unchanged
        if ex["target_present"]:
            for key in ("mixture", "target", "interferer"):
                np.testing.assert_array_equal(ex[key], ref[key])
        else:
            assert not np.any(ex["target"])
            np.testing.assert_allclose(ex["mixture"], ex["interferer"], atol=1e-7)  # no noise corpus here
            assert np.sqrt(np.mean(ex["mixture"] ** 2)) > 1e-3
            assert mixed.plan(i).target_absent
    assert 4 <= sum(flags) <= 20  # both kinds occur
    with pytest.raises(ValueError, match="p_target_absent"):
        DynamicMixDataset(corpus, p_target_absent=1.5)


def test_eval_set_leaves_absent_targets_empty_and_eval_reads_them(corpus, tmp_path):
    data = DynamicMixDataset(corpus, seed=2, segment_seconds=1.0, p_target_absent=0.5)
    examples = [data[i] for i in range(8)]
    assert {ex["target_present"] for ex in examples} == {0, 1}
    csv_path = write_eval_set(examples, tmp_path / "set", SR)
    with open(csv_path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for ex, row in zip(examples, rows):
        assert bool(row["target"]) == bool(ex["target_present"])
    items = read_eval_list(csv_path)
    assert ["target" in item for item in items] == [bool(ex["target_present"]) for ex in examples]

    # an extractor that outputs 10 % of the mixture: -20 dB on every item
    summary = evaluate_list(items, lambda m, r, sr: (0.1 * m, {"confidence": float(np.mean(np.abs(m)))}),
                            tmp_path / "out", with_pesq=False, with_stoi=False)
    absent = summary["target_absent"]
    assert absent["n"] == sum(1 - ex["target_present"] for ex in examples)
    assert absent["output_to_mixture_db_median"] == pytest.approx(-20.0, abs=1e-3)
    assert absent["share_below_15db"] == 1.0
    assert summary["metrics"]["si_sdr"]["n"] == sum(ex["target_present"] for ex in examples)
    with open(tmp_path / "out" / "metrics.csv", encoding="utf-8") as handle:
        out_rows = list(csv.DictReader(handle))
    assert [int(r["target_present"]) for r in out_rows] == [ex["target_present"] for ex in examples]
    assert all(r["si_sdr"] in ("", "nan") for r in out_rows if r["target_present"] == "0")
    assert "auc_present_vs_absent" in summary["confidence"]
    json.loads((tmp_path / "out" / "summary.json").read_text())  # strict JSON


# --------------------------------------------------------------------------- loss
def test_absent_energy_known_answers_and_mixed_batch():
    rng = torch.Generator().manual_seed(0)
    mix = torch.randn(3, 800, generator=rng)
    est = torch.stack([0.1 * mix[0], torch.zeros(800), mix[2]])
    got = losses.absent_energy(est, mix, reduction="none", floor_db=-30.0)
    expected = [10 * math.log10(0.01 + 1e-3), -30.0, 10 * math.log10(1 + 1e-3)]
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-4)
    # the mixture's level does not matter
    np.testing.assert_allclose(losses.absent_energy(7 * est, 7 * mix, reduction="none").numpy(), got.numpy(),
                               atol=1e-4)

    target = torch.randn(3, 800, generator=rng)
    estimate = (target + 0.3 * torch.randn(3, 800, generator=rng)).requires_grad_()
    batch = {"target": target, "mixture": mix, "target_present": torch.tensor([1, 0, 1])}
    loss = losses.tse_loss(estimate, batch, "neg_snr")
    snr = losses.neg_snr(estimate, target, reduction="none")
    energy = losses.absent_energy(estimate, mix, reduction="none")
    assert loss.item() == pytest.approx(((snr[0] + energy[1] + snr[2]) / 3).item(), abs=1e-5)
    loss.backward()
    assert torch.isfinite(estimate.grad).all()
    # without the key every item is target-present
    plain = {"target": target, "mixture": mix}
    assert losses.tse_loss(estimate, plain, "neg_si_sdr").item() == pytest.approx(
        losses.neg_si_sdr(estimate, target).item(), abs=1e-6)
    with pytest.raises(ValueError, match="present_loss"):
        losses.tse_loss(estimate, plain, "l1")


def test_si_sdr_level_loss_adds_the_level_error_only():
    rng = torch.Generator().manual_seed(2)
    target = torch.randn(2, 800, generator=rng)
    estimate = target + 0.2 * torch.randn(2, 800, generator=rng)
    for gain in (1.0, 2.0, 0.25):
        got = losses.neg_si_sdr_level(gain * estimate, target, reduction="none", level_weight=0.3)
        level = 10 * torch.log10((gain * estimate).pow(2).sum(1) / target.pow(2).sum(1))
        expected = losses.neg_si_sdr(estimate, target, reduction="none") + 0.3 * level.abs()
        np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-4)
    assert "neg_si_sdr_level" in losses.LEVEL_TRAINING and "neg_si_sdr" not in losses.LEVEL_TRAINING


def test_trainer_reports_absent_energy_and_marks_calibrated_output(tmp_path):
    from usef.checkpoint import load_pretrained
    from usef.data.pack import write_pack
    from usef.train.state import RunLog
    from usef.train.trainer import train

    voices = {f"s{i}": [_voice(90.0 + 25 * i, 4.0, i)] for i in range(6)}
    pack = tmp_path / "speech.npz"
    write_pack(pack, SpeakerCorpus.from_arrays(voices, SR))
    mix = {"reference_seconds": [0.6, 1.0], "min_reference_seconds": 0.5, "min_target_seconds": 0.5,
           "p_target_absent": 0.5}
    config = {
        "model": {"name": "usef_conformer", "args": {"preset": "tiny"}},
        "data": {"type": "dynamic_mix", "speech": str(pack), "dev_speakers": 3, "mix": mix},
        "train": {"batch_size": 2, "segment_seconds": 0.5, "lr": 1e-3, "warmup_steps": 1, "max_steps": 2,
                  "num_workers": 0, "log_every": 1, "dev_every": 2, "seed": 3, "loss": "neg_snr",
                  "threads": 1},
        "dev": {"n_items": 8, "batch_size": 4},
    }
    threads = torch.get_num_threads()
    try:
        train(config, tmp_path / "exp")
    finally:
        torch.set_num_threads(threads)
    dev = [r for r in RunLog(tmp_path / "exp").records() if "dev_si_sdr_imp" in r][-1]
    assert dev["dev_n_absent"] >= 1 and dev["dev_n"] + dev["dev_n_absent"] == 8
    assert math.isfinite(dev["dev_absent_energy_db"]) and math.isfinite(dev["dev_si_sdr_imp"])
    model = load_pretrained(tmp_path / "exp" / "best")
    assert model.output_level == "calibrated"  # neg_snr trains the level


# --------------------------------------------------------------------------- level rules
def test_level_rules():
    assert audio.resolve_level("auto", "calibrated") == "calibrated"
    assert audio.resolve_level("auto", None) == "mixture"
    assert audio.resolve_level("model", "calibrated") == "model"
    with pytest.raises(ValueError, match="level"):
        audio.resolve_level("loud", None)
    est = np.array([[0.5, -2.0, 1.0], [0.1, 0.2, -0.3], [3.0, 0.0, 0.0]], dtype=np.float32)
    mix = np.array([[0.5, 0.5, 0.5], [0.9, 0.9, 0.9], [2.0, 0.0, 0.0]], dtype=np.float32)
    out = audio.limit_peak(est, mix, 0.999)
    np.testing.assert_allclose(out[0], est[0] * 0.999 / 2.0, rtol=1e-6)  # over full scale: scaled down
    np.testing.assert_array_equal(out[1], est[1])  # within full scale: as it is
    np.testing.assert_array_equal(out[2], est[2])  # the mixture itself clips: not our failure


def test_bounded_level_corrects_a_little_and_keeps_silence_silent():
    rng = np.random.default_rng(3)
    target = 0.1 * rng.standard_normal((1, SR)).astype(np.float32)
    other = 0.1 * rng.standard_normal((1, SR)).astype(np.float32)
    mixture = target + other
    full = audio.match_level(0.9 * target, mixture, sample_rate=SR)
    # 0.9 dB quiet: inside the bound, the correction is the free fit's
    np.testing.assert_allclose(audio.bounded_match_level(0.9 * target, mixture, 3.0, sample_rate=SR), full,
                               rtol=1e-5)
    # 6 dB quiet: corrected by 3 dB only
    half = audio.bounded_match_level(0.5 * target, mixture, 3.0, sample_rate=SR)
    np.testing.assert_allclose(half, 0.5 * target * 10 ** (3 / 20), rtol=1e-5)
    # an absent talker's near silence (here 40 dB under the interferer) rises by 3 dB at most,
    # where the free fit would bring it up to the interferer's level
    hush = 0.01 * other
    assert level_db(audio.bounded_match_level(hush, mixture, 3.0, sample_rate=SR)[0], hush[0]) <= 3.0 + 1e-6
    assert level_db(audio.match_level(hush, mixture, sample_rate=SR)[0], hush[0]) > 30.0
    # silence stays silence; the bound 0 keeps the model's level; full scale is kept
    np.testing.assert_array_equal(audio.bounded_match_level(np.zeros_like(target), mixture), 0.0)
    np.testing.assert_allclose(audio.bounded_match_level(0.5 * target, mixture, 0.0), 0.5 * target)
    loud = audio.bounded_match_level(20 * target, 0.5 * mixture / np.abs(mixture).max(), 3.0, 0.999, SR)
    assert np.abs(loud).max() == pytest.approx(0.999, rel=1e-5)
    with pytest.raises(ValueError, match="max_correction_db"):
        audio.bounded_match_level(target, mixture, -1.0)


def test_calibrated_model_keeps_its_level_and_gives_confidence(tmp_path):
    import usef
    from usef.models import build_model

    torch.manual_seed(0)
    model = build_model("usef_conformer", preset="tiny", sample_rate=SR).eval()
    rng = np.random.default_rng(0)
    mixture, reference = 0.1 * rng.standard_normal(SR).astype(np.float32), rng.standard_normal(SR // 2)
    with torch.inference_mode():
        raw = model(torch.from_numpy(mixture)[None], torch.from_numpy(reference.astype(np.float32))[None])[0]
    raw = raw.numpy()
    fitted = usef.Extractor(model).extract(mixture, reference, sample_rate=SR)
    model.output_level = "calibrated"
    kept = usef.Extractor(model).extract(mixture, reference, sample_rate=SR)
    expected = audio.bounded_match_level(raw, mixture, audio.CALIBRATED_MAX_CORRECTION_DB, 0.999, SR)
    np.testing.assert_allclose(kept, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fitted, audio.match_level(raw, mixture, 0.999, SR), rtol=1e-5, atol=1e-6)
    assert abs(level_db(kept, raw)) <= audio.CALIBRATED_MAX_CORRECTION_DB + 1e-6
    with pytest.raises(ValueError, match="confidence map"):
        usef.Extractor(model).extract(mixture, reference, sample_rate=SR, return_confidence=True)
    model.confidence_map = ConfidenceMap((0.1, 0.2, -0.3), 0.5).to_dict()
    extractor = usef.Extractor(model, chunk_seconds=0.5)
    out, score = extractor.extract(mixture, reference, sample_rate=SR, return_confidence=True)
    assert 0.0 <= score <= 1.0 and out.shape == mixture.shape
    # a list gives one (estimate, confidence) per item; a silent mixture scores 0
    both = extractor.extract([mixture, np.zeros_like(mixture)], [reference, reference], sample_rate=SR,
                             return_confidence=True)
    assert both[0][1] == pytest.approx(score, abs=1e-6) and both[1][1] == 0.0


# --------------------------------------------------------------------------- confidence maths
def test_roc_auc_matches_the_pairwise_definition():
    rng = np.random.default_rng(3)
    scores = np.round(rng.standard_normal(60), 1)  # ties included
    labels = rng.integers(0, 2, 60)
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairwise = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert roc_auc(scores, labels) == pytest.approx(pairwise, abs=1e-12)
    assert roc_auc([0.1, 0.9], [0, 1]) == 1.0 and roc_auc([0.9, 0.1], [0, 1]) == 0.0
    assert math.isnan(roc_auc([0.5, 0.6], [1, 1]))


def test_choose_threshold_known_answers():
    scores = [0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.9, 0.4]
    labels = [0, 0, 0, 1, 1, 1, 1, 0]
    # perfectly separable: Youden's J picks the gap between 0.4 and 0.6
    assert choose_threshold(scores, labels) == pytest.approx(0.5)
    scores[7] = 0.75  # one negative now sits among the positives
    # J = 1 - 1/4 just above 0.3, against 1/2 - 0 just above 0.75 and 3/4 - 1/4 just above 0.6
    assert choose_threshold(scores, labels) == pytest.approx(0.45)
    # at most a quarter of the negatives accepted: 0.75 may pass, everything above 0.3 must
    assert choose_threshold(scores, labels, max_false_alarm=0.25) == pytest.approx(0.45)
    # no false alarm allowed: above 0.75, which loses two positives
    assert choose_threshold(scores, labels, max_false_alarm=0.0) == pytest.approx(0.775)
    with pytest.raises(ValueError, match="both classes"):
        choose_threshold([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="max_false_alarm"):
        choose_threshold(scores, labels, max_false_alarm=1.5)


def test_fit_separates_and_roundtrips():
    rng = np.random.default_rng(0)
    good = rng.normal([-3.0, -1.0, -20.0], 2.0, (80, 3))
    bad = rng.normal([-25.0, -15.0, -2.0], 2.0, (80, 3))
    cmap = fit(np.vstack([good, bad]), [1] * 80 + [0] * 80)
    scores = cmap(np.vstack([good, bad]))
    assert roc_auc(scores, [1] * 80 + [0] * 80) > 0.99
    assert ConfidenceMap.from_dict(cmap.to_dict()) == cmap
    with pytest.raises(ValueError, match="features"):
        ConfidenceMap.from_dict({"features": ["x"], "weights": [1.0], "bias": 0.0})
    with pytest.raises(ValueError, match="both classes"):
        fit(good, [1] * 80)


def test_features_known_answers():
    energy = np.array([[100.0, 10.0, 10.0, 90.0, 0.9], [1.0, 0.0, 0.0, 1.0, 1.0]])
    f = features(energy)
    np.testing.assert_allclose(f[0], [-10.0, 0.0, -20.0])
    assert f[1, 0] == -60.0 and f[1, 1] == -60.0  # silent output: floored, never -inf


def test_confidence_summary_threshold_and_kept_items():
    rows = [{"confidence": c, "target_present": 1, "si_sdr_imp": v, "confused": False}
            for c, v in zip(np.linspace(0.5, 1.0, 10), range(10))]
    rows += [{"confidence": 0.1, "target_present": 0}, {"confidence": 0.8, "target_present": 0}]
    out = confidence_summary(rows, threshold=0.6)
    # every present item beats the absent 0.1; only the 4 above 0.8 beat the absent 0.8
    assert out["auc_present_vs_absent"] == pytest.approx((10 + 4) / 20)
    assert out["false_alarm_rate"] == 0.5
    assert out["miss_rate"] == pytest.approx(0.2)  # 0.5 and 0.556 fall below 0.6
    assert out["si_sdr_imp_kept_drop10"] == pytest.approx(np.mean(range(1, 10)))
    assert math.isnan(out["auc_correct_vs_confused"])  # no confused items


def test_absent_item_files(tmp_path):
    # a list whose target cell is empty evaluates without a target file
    wave = _voice(120.0, 1.0, 0)
    sf.write(tmp_path / "m.wav", wave, SR)
    sf.write(tmp_path / "r.wav", wave, SR)
    (tmp_path / "list.csv").write_text("id,mixture,reference,target\nx,m.wav,r.wav,\n", encoding="utf-8")
    items = read_eval_list(tmp_path / "list.csv")
    summary = evaluate_list(items, lambda m, r, sr: np.zeros_like(m), tmp_path / "out", with_pesq=False)
    assert summary["n_failed_items"] == 0, (tmp_path / "out" / "failures.csv").read_text()
    assert summary["target_absent"]["output_to_mixture_db_median"] == -100.0


# --------------------------------------------------------------------------- command line
def test_cli_extract_and_eval_with_confidence(tmp_path):
    import yaml

    from usef.bin import eval as eval_cli
    from usef.bin import extract as extract_cli
    from usef.models import build_model

    torch.manual_seed(1)
    model_dir = tmp_path / "tiny"
    build_model("usef_conformer", preset="tiny", sample_rate=SR).save_pretrained(model_dir)
    rng = np.random.default_rng(5)
    for name in ("m0", "m1", "r0"):
        sf.write(tmp_path / f"{name}.wav", (0.1 * rng.standard_normal(SR)).astype(np.float32), SR)
    (tmp_path / "pairs.csv").write_text("id,mixture,reference\na,m0.wav,r0.wav\nb,m1.wav,r0.wav\n", encoding="utf-8")
    argv = ["--list", str(tmp_path / "pairs.csv"), "--out-dir", str(tmp_path / "out"), "--model", str(model_dir),
            "--confidence", "--threads", "1"]
    assert extract_cli.main(argv) == 1  # no fitted map: every item fails, with the reason
    failures = (tmp_path / "out" / "failures.csv").read_text(encoding="utf-8")
    assert "confidence map" in failures and not (tmp_path / "out" / "confidence.csv").exists()

    config = yaml.safe_load((model_dir / "config.yaml").read_text(encoding="utf-8"))
    config["confidence"] = ConfidenceMap((0.05, 0.05, -0.05), 0.2, 0.4).to_dict()
    (model_dir / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    assert extract_cli.main(argv) == 0
    with open(tmp_path / "out" / "confidence.csv", newline="", encoding="utf-8") as handle:
        rows = {row["id"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"a", "b"} and all(0.0 <= float(r["confidence"]) <= 1.0 for r in rows.values())
    assert {r["threshold"] for r in rows.values()} == {"0.4"}
    assert not (tmp_path / "out" / "failures.csv").exists()

    (tmp_path / "eval.csv").write_text("id,mixture,reference,target\na,m0.wav,r0.wav,m1.wav\nb,m1.wav,r0.wav,\n",
                                       encoding="utf-8")
    assert eval_cli.main(["--list", str(tmp_path / "eval.csv"), "--out-dir", str(tmp_path / "ev"), "--model",
                          str(model_dir), "--confidence", "--no-pesq", "--no-stoi", "--threads", "1"]) == 0
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text(encoding="utf-8"))
    assert summary["confidence"]["threshold"] == 0.4 and summary["target_absent"]["n"] == 1
    assert summary["confidence"]["auc_present_vs_absent"] in (0.0, 0.5, 1.0)


def test_bundled_target_presence_model_scores_its_outputs():
    import usef
    from usef import hub

    if "usef-conformer-8k" not in hub.list_models():
        pytest.skip("usef-conformer-8k is not installed")
    # the bundled default has had target-absent training (stage 5d): trained level, fitted map
    extractor = usef.load_model("default", sample_rate=SR, device="cpu")
    assert extractor.level == "calibrated" and 0.5 <= extractor.confidence_map().threshold < 0.9
    talker, other = _voice(110.0, 3.0, 1), _voice(220.0, 3.0, 2)
    mixture = (talker + other).astype(np.float32)
    out, score = extractor.extract(mixture, _voice(110.0, 2.0, 3), sample_rate=SR, return_confidence=True)
    assert out.shape == mixture.shape and 0.0 <= score <= 1.0
    feats = extractor.extract(mixture, _voice(110.0, 2.0, 3), sample_rate=SR, return_features=True)[1]
    assert feats.shape == (3,) and np.isfinite(feats).all()
    with pytest.raises(ValueError, match="one of them"):
        extractor.extract(mixture, talker, sample_rate=SR, return_confidence=True, return_features=True)


def test_energy_ratio_and_level_rule_helpers():
    from usef.metrics import energy_ratio_db

    x = np.random.default_rng(0).standard_normal(400)
    assert energy_ratio_db(0.1 * x, x) == pytest.approx(-20.0)
    assert energy_ratio_db(np.zeros(400), x) == -100.0  # silence: the clamp, never -inf
    assert math.isnan(energy_ratio_db(x, np.zeros(400)))
    est, mix = (0.5 * x)[None].astype(np.float32), (x / np.abs(x).max())[None].astype(np.float32)
    np.testing.assert_array_equal(audio.apply_level(est, mix, "model", SR), est)
    np.testing.assert_array_equal(audio.apply_level(est, mix, "calibrated", SR),
                                  audio.bounded_match_level(est, mix, audio.CALIBRATED_MAX_CORRECTION_DB, 0.999, SR))
    np.testing.assert_array_equal(audio.apply_level(est, mix, "mixture", SR), audio.match_level(est, mix, 0.999, SR))
    with pytest.raises(ValueError, match="rule"):
        audio.apply_level(est, mix, "auto", SR)


def test_default_with_confidence_picks_a_model_that_has_a_map(tmp_path, monkeypatch, tiny_model_dir):
    """``return_confidence`` with ``model="default"`` at 16 kHz raised ValueError (the 16 kHz
    default has no confidence map) although the README shows exactly that call."""
    import shutil

    from usef import hub
    from usef.bin import ModelsByRate

    def bundle(name):
        shutil.copytree(tiny_model_dir, tmp_path / name)

    monkeypatch.setenv("USEF_PRETRAINED_DIR", str(tmp_path))
    bundle(hub.DEFAULT_8K)
    bundle(hub.DEFAULT_16K)
    # without the 16 kHz target-presence model the 8 kHz default serves every rate
    assert hub.default_model_name(16000, need_confidence=True) == hub.DEFAULT_8K
    bundle(hub.DEFAULT_16K_CONFIDENCE)
    assert hub.default_model_name(16000) == hub.DEFAULT_16K
    assert hub.default_model_name(16000, need_confidence=True) == hub.DEFAULT_16K_CONFIDENCE
    assert hub.default_model_name(None, need_confidence=True) == hub.DEFAULT_16K_CONFIDENCE
    assert hub.default_model_name(8000, need_confidence=True) == hub.DEFAULT_8K
    assert usef_load("default", 44100, True).name == hub.DEFAULT_16K_CONFIDENCE
    assert usef_load("default", 44100, False).name == hub.DEFAULT_16K
    # the command line's per-rate picker keeps the two apart
    assert ModelsByRate("default", "cpu", need_confidence=True)(16000).name == hub.DEFAULT_16K_CONFIDENCE
    assert ModelsByRate("default", "cpu")(16000).name == hub.DEFAULT_16K


def usef_load(name, rate, need_confidence):
    import usef

    return usef.load_model(name, device="cpu", sample_rate=rate, need_confidence=need_confidence)


def test_bundled_default_scores_16k_input():
    import usef
    from usef import hub

    if not {hub.DEFAULT_16K, hub.DEFAULT_16K_CONFIDENCE} <= set(hub.list_models()):
        pytest.skip("the 16 kHz bundled models are not installed")
    rate = 16000
    t = np.arange(int(2.0 * rate)) / rate
    talker = (0.3 * np.sin(2 * np.pi * 140.0 * t) * (1 + np.sin(2 * np.pi * 3.0 * t))).astype(np.float32)
    other = (0.3 * np.sin(2 * np.pi * 230.0 * t + 1.0)).astype(np.float32)
    out, score = usef.extract(talker + other, talker[: rate], sample_rate=rate, device="cpu", return_confidence=True)
    assert out.shape == talker.shape and 0.0 <= score <= 1.0
    outs = usef.extract([talker + other, talker + other], talker[: rate], sample_rate=rate, device="cpu",
                        return_confidence=True)
    assert [o[1] for o in outs] == pytest.approx([score, score], abs=1e-5)
    # a model without a map says so and names those with one
    with pytest.raises(ValueError, match="no fitted confidence map.*with one: .*usef-conformer-16k-tp"):
        usef.load_model("usef-conformer-16k", device="cpu").confidence_map()
    # the plain 16 kHz default has a map of its own (a weaker one), but asking for a confidence
    # picks the target-absent ensemble
    assert {hub.DEFAULT_8K, hub.DEFAULT_16K, hub.DEFAULT_16K_CONFIDENCE} <= set(hub.models_with_confidence())
    assert hub.default_model_name(rate, need_confidence=True) == hub.DEFAULT_16K_CONFIDENCE
    assert hub.default_model_name(rate) == hub.DEFAULT_16K
