"""Known-answer tests for usef.metrics and usef.train.losses."""

import logging
import sys

import numpy as np
import pytest
import torch

from usef import metrics as M
from usef.train.losses import neg_si_sdr, neg_snr


def _at_snr(target: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    """Zero-mean white noise orthogonal to the zero-mean target, scaled to ``snr_db``.

    With the noise orthogonal to the target the SI-SDR projection is the target
    itself, so SI-SDR equals the constructed SNR exactly.
    """
    rng = np.random.default_rng(seed)
    tgt = target - target.mean()
    noise = rng.standard_normal(target.shape[0])
    noise -= noise.mean()
    noise -= np.dot(noise, tgt) / np.dot(tgt, tgt) * tgt
    noise *= np.sqrt(np.dot(tgt, tgt) / np.dot(noise, noise) / 10 ** (snr_db / 10))
    return noise


def _speech_like(sample_rate: int, seconds: float = 3.0) -> np.ndarray:
    """Voiced harmonic signal with gliding pitch and syllable-rate gaps."""
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    phase = 2 * np.pi * np.cumsum(140 + 30 * np.sin(2 * np.pi * 0.7 * t)) / sample_rate
    x = sum(np.sin(k * phase) / k for k in range(1, 17))
    envelope = np.sqrt(np.clip(np.sin(2 * np.pi * 3.0 * t), 0, None))
    return 0.3 * x * envelope / np.abs(x).max()


@pytest.fixture
def target():
    return np.random.default_rng(123).standard_normal(8000)


# --- SI-SDR ---------------------------------------------------------------------------------


def test_si_sdr_equals_constructed_snr(target):
    noise = _at_snr(target, 10.0)
    assert M.si_sdr(target + noise, target) == pytest.approx(10.0, abs=0.01)
    assert M.si_sdr(target + _at_snr(target, -5.0, seed=1), target) == pytest.approx(
        -5.0, abs=0.01
    )


def test_si_sdr_is_scale_invariant_but_not_noise_invariant(target):
    estimate = target + _at_snr(target, 10.0)
    assert M.si_sdr(3 * estimate, target) == pytest.approx(
        M.si_sdr(estimate, target), abs=1e-9
    )
    assert (
        M.si_sdr(estimate, target)
        > M.si_sdr(target + _at_snr(target, 0.0), target) + 9.9
    )


def test_si_sdr_accepts_torch_and_rejects_bad_shapes(target):
    estimate = target + _at_snr(target, 10.0)
    assert M.si_sdr(
        torch.from_numpy(estimate).float(), torch.from_numpy(target).float()
    ) == pytest.approx(10.0, abs=0.01)
    with pytest.raises(ValueError, match="same length"):
        M.si_sdr(estimate[:-1], target)
    with pytest.raises(ValueError, match="estimate must be a 1-D"):
        M.si_sdr(np.zeros((2, 8000)), target)


def _si_sdr_reference(estimate, target):
    """Textbook SI-SDR in float64, no epsilon (Le Roux et al., 2019)."""
    e = np.asarray(estimate, np.float64) - np.mean(estimate)
    t = np.asarray(target, np.float64) - np.mean(target)
    p = (e @ t) / (t @ t) * t
    r = e - p
    return 10 * np.log10((p @ p) / (r @ r))


def test_si_sdr_silent_and_dc_estimates_are_failures_not_zero(target):
    # a fixed epsilon scored these 0 dB (and a DC-only estimate +4.8 dB SI-SDRi)
    assert M.si_sdr(np.zeros_like(target), target) == -M.DB_LIMIT
    assert M.si_sdr(np.full_like(target, 0.3), target) == -M.DB_LIMIT
    mixture = target + _at_snr(target, 0.0, seed=2)
    assert M.si_sdr_imp(np.full_like(target, 0.3), target, mixture) < -90
    with pytest.raises(ValueError, match="silent"):
        M.si_sdr(target, np.zeros_like(target))


@pytest.mark.parametrize("level_db, snr_db", [(0.0, -48.9), (-105.0, 60.0), (-60.0, 20.0), (0.0, 90.0)])
def test_si_sdr_is_level_independent_and_matches_float64_reference(target, level_db, snr_db):
    # near-silent estimates (true -48.9 dB) scored -7.6 dB and quiet speech (true 60 dB)
    # 24.4 dB with the old fixed epsilon of 1e-8
    gain = 10 ** (level_db / 20)
    if snr_db < 0:  # mostly noise: a near-silent, wrong estimate
        estimate = 1e-4 * (target * 10 ** (snr_db / 20) + _at_snr(target, 0.0, seed=5))
        tgt = target
    else:
        tgt = target * gain
        estimate = tgt + _at_snr(tgt, snr_db, seed=6)
    assert M.si_sdr(estimate, tgt) == pytest.approx(_si_sdr_reference(estimate, tgt), abs=1e-6)


def test_si_sdr_perfect_estimate_is_clamped(target):
    assert M.si_sdr(target, target) == M.DB_LIMIT
    assert M.si_sdr(-0.5 * target, target) == M.DB_LIMIT


def test_si_sdr_imp_arithmetic(target):
    mixture = target + _at_snr(target, 0.0, seed=2)
    estimate = target + _at_snr(target, 12.0, seed=3)
    assert M.si_sdr_imp(estimate, target, mixture) == pytest.approx(12.0, abs=0.02)


# --- BSS-eval SDR ---------------------------------------------------------------------------


def test_sdr_matches_fast_bss_eval_and_allows_filtering(target):
    import fast_bss_eval

    estimate = target + _at_snr(target, 5.0)
    expected = float(fast_bss_eval.sdr(target[None], estimate[None])[0])
    assert M.sdr(estimate, target) == pytest.approx(expected, abs=1e-6)
    # a short FIR filter of the target is "allowed distortion": high SDR, low SI-SDR
    filtered = np.convolve(target, [1.0, -0.6, 0.3], mode="full")[: target.size]
    assert M.sdr(filtered, target) > 40.0
    assert M.si_sdr(filtered, target) < 5.0


def test_sdr_fallback_agrees_with_fast_bss_eval(target, monkeypatch):
    cases = [
        target + _at_snr(target, snr, seed=i) for i, snr in enumerate((-5.0, 3.0, 15.0))
    ]
    cases.append(
        np.convolve(target, [0.5, 0.2], mode="same")
        + 0.05 * _at_snr(target, 0.0, seed=9)
    )
    reference = [M.sdr(e, target) for e in cases]
    monkeypatch.setitem(
        sys.modules, "fast_bss_eval", None
    )  # import now raises ImportError
    for estimate, expected in zip(cases, reference):
        assert M.sdr(estimate, target) == pytest.approx(expected, abs=0.1)


@pytest.mark.parametrize("use_fast", [True, False])
def test_sdr_edge_cases_one_behaviour_on_both_paths(target, monkeypatch, use_fast):
    # fast_bss_eval raised on perfect / scaled-perfect / silent estimates, the NumPy path
    # returned -80 dB or drifted; now both give the same clamped values
    if not use_fast:
        monkeypatch.setitem(sys.modules, "fast_bss_eval", None)
    assert M.sdr(target, target) == M.DB_LIMIT
    assert M.sdr(2.5 * target, target) == M.DB_LIMIT
    assert M.sdr(np.zeros_like(target), target) == -M.DB_LIMIT


def test_sdr_fallback_tracks_fast_bss_eval_at_high_sdr(target, monkeypatch):
    import fast_bss_eval

    for snr in (55.0, 66.0, 90.0):
        estimate = target + _at_snr(target, snr, seed=int(snr))
        fast = float(fast_bss_eval.sdr(target[None], estimate[None], filter_length=512)[0])
        assert M._sdr_fallback(estimate, target) == pytest.approx(fast, abs=0.01)


def test_level_db_known_answers(target):
    assert M.level_db(target, target) == pytest.approx(0.0)
    assert M.level_db(0.5 * target, target) == pytest.approx(20 * np.log10(0.5))
    assert M.level_db(np.zeros_like(target), target) == -M.DB_LIMIT


def test_compute_metrics_missing_pesq_stoi_keep_si_sdr(target, monkeypatch):
    # a missing metric package (or a metric failing on one item) costs that metric only
    monkeypatch.setitem(sys.modules, "pesq", None)
    monkeypatch.setitem(sys.modules, "pystoi", None)
    mixture = target + _at_snr(target, 0.0, seed=2)
    estimate = target + _at_snr(target, 10.0, seed=3)
    out = M.compute_metrics(estimate, target, mixture, 8000)
    assert np.isnan(out["pesq"]) and np.isnan(out["stoi"])
    assert out["si_sdr_imp"] == pytest.approx(10.0, abs=0.1)
    assert np.isnan(M.compute_metrics(estimate, target, mixture, 8000, with_stoi=False)["stoi"])


def test_sdr_imp_and_silent_target(target):
    mixture = target + _at_snr(target, 0.0, seed=4)
    estimate = target + _at_snr(target, 10.0, seed=5)
    assert M.sdr_imp(estimate, target, mixture) == pytest.approx(
        M.sdr(estimate, target) - M.sdr(mixture, target), abs=1e-9
    )
    assert M.sdr_imp(estimate, target, mixture) == pytest.approx(10.0, abs=0.5)
    with pytest.raises(ValueError, match="silent"):
        M.sdr(target, np.zeros_like(target))


# --- PESQ / STOI ----------------------------------------------------------------------------


def test_pesq_high_on_identical_speech_low_on_noise():
    speech = _speech_like(8000)
    noise = 0.1 * np.random.default_rng(0).standard_normal(speech.size)
    assert M.pesq(speech, speech, 8000) > 4.0
    assert M.pesq(noise, speech, 8000) < 2.0
    # 22.05 kHz goes through the 16 kHz wide-band path
    speech22 = _speech_like(22050, seconds=2.0)
    assert M.pesq(speech22, speech22, 22050) > 4.0


def test_pesq_no_utterance_gives_nan(monkeypatch, caplog):
    import pesq as pesq_lib

    def raise_no_utterance(*args, **kwargs):
        raise pesq_lib.NoUtterancesError("No utterances detected")

    monkeypatch.setattr(pesq_lib, "pesq", raise_no_utterance)
    speech = _speech_like(8000, seconds=1.0)
    with caplog.at_level(logging.WARNING, logger="usef.metrics"):
        assert np.isnan(M.pesq(speech, speech, 8000))
    assert "no utterance" in caplog.text
    assert np.isnan(M.pesq(np.zeros(8000), np.zeros(8000), 8000))


def test_missing_optional_package_names_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pesq", None)
    monkeypatch.setitem(sys.modules, "pystoi", None)
    with pytest.raises(ImportError, match=r"metrics.pesq needs the 'pesq' package.*pip install usef"):
        M.pesq(np.ones(8000), np.ones(8000), 8000)
    with pytest.raises(ImportError, match=r"metrics.stoi needs the 'pystoi' package.*pip install usef"):
        M.stoi(np.ones(8000), np.ones(8000), 8000)


def test_stoi_identical_and_noise():
    speech = _speech_like(8000)
    noise = 0.1 * np.random.default_rng(0).standard_normal(speech.size)
    assert M.stoi(speech, speech, 8000) > 0.99
    assert M.stoi(noise, speech, 8000) < 0.5


def test_compute_metrics_keys_and_confusion(target):
    interferer = np.random.default_rng(7).standard_normal(target.size)
    mixture = target + interferer
    result = M.compute_metrics(mixture, target, mixture, 8000, with_pesq=False)
    assert list(result) == [
        "input_si_sdr",
        "si_sdr",
        "si_sdr_imp",
        "sdr",
        "sdr_imp",
        "pesq",
        "stoi",
        "level_db",
        "peak",
        "mixture_peak",
    ]
    assert result["si_sdr_imp"] == pytest.approx(0.0, abs=1e-9)
    assert np.isnan(result["pesq"])
    # an estimate that follows the wrong talker
    wrong = interferer + 0.1 * target
    result = M.compute_metrics(
        wrong, target, mixture, 8000, interferer=interferer, with_pesq=False
    )
    assert result["confused"] is True
    assert result["si_sdr_interferer"] > 19.0
    right = target + 0.1 * interferer
    result = M.compute_metrics(
        right, target, mixture, 8000, interferer=interferer, with_pesq=False
    )
    assert result["confused"] is False


# --- summarize ------------------------------------------------------------------------------


def test_summarize_matches_scipy_t_interval():
    from scipy import stats

    values = [3.1, 4.7, 5.0, 6.2, 2.8, 9.4, 5.5, 4.4]
    low, high = stats.t.interval(
        0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values)
    )
    s = M.summarize(values + [float("nan")])
    assert s["n"] == 8
    assert s["mean"] == pytest.approx(5.1375)
    assert s["median"] == pytest.approx(4.85)
    assert s["std"] == pytest.approx(np.std(values, ddof=1))
    assert (s["ci95_low"], s["ci95_high"]) == pytest.approx((low, high), abs=1e-9)


def test_summarize_normal_fallback_and_small_samples(monkeypatch):
    values = [1.0, 2.0, 3.0, 4.0]
    monkeypatch.setitem(sys.modules, "scipy.stats", None)
    s = M.summarize(values)
    half = 1.959963984540054 * np.std(values, ddof=1) / 2.0
    assert (s["ci95_low"], s["ci95_high"]) == pytest.approx((2.5 - half, 2.5 + half))
    one = M.summarize([7.0])
    assert one["mean"] == 7.0 and one["n"] == 1 and np.isnan(one["ci95_low"])
    assert M.summarize([])["n"] == 0


# --- losses ---------------------------------------------------------------------------------


def _batch():
    rng = np.random.default_rng(11)
    targets = rng.standard_normal((3, 4000))
    estimates = np.stack(
        [
            t + _at_snr(t, snr, seed=i)
            for i, (t, snr) in enumerate(zip(targets, (0, 5, 10)))
        ]
    )
    return torch.from_numpy(estimates), torch.from_numpy(targets)


def test_neg_si_sdr_equals_metric_and_has_gradients():
    estimate, target = _batch()
    per_item = neg_si_sdr(estimate, target, reduction="none")
    expected = [-M.si_sdr(e, t) for e, t in zip(estimate.numpy(), target.numpy())]
    assert per_item.tolist() == pytest.approx(expected, abs=1e-6)
    assert per_item.tolist() == pytest.approx([0.0, -5.0, -10.0], abs=0.01)

    estimate = estimate.float().clone().requires_grad_(True)
    loss = neg_si_sdr(estimate, target.float())
    assert loss.dim() == 0 and loss.item() == pytest.approx(-5.0, abs=0.01)
    loss.backward()
    assert estimate.grad is not None and torch.isfinite(estimate.grad).all()
    assert estimate.grad.abs().sum() > 0


def test_neg_si_sdr_padding_is_ignored():
    estimate, target = _batch()
    lengths = torch.tensor([4000, 2500, 1200])
    padded_est, padded_tgt = estimate.clone(), target.clone()
    for i, n in enumerate(lengths.tolist()):
        # garbage in the padding must not change the loss
        padded_est[i, n:] = 100.0
        padded_tgt[i, n:] = -50.0
    padded = neg_si_sdr(padded_est, padded_tgt, lengths=lengths, reduction="none")
    unpadded = [
        neg_si_sdr(estimate[i : i + 1, :n], target[i : i + 1, :n]).item()
        for i, n in enumerate(lengths.tolist())
    ]
    assert padded.tolist() == pytest.approx(unpadded, abs=1e-6)
    with pytest.raises(ValueError, match="lengths"):
        neg_si_sdr(estimate, target, lengths=torch.tensor([0, 1, 1]))


def test_neg_snr_known_answer_scale_sensitive_and_differentiable():
    estimate, target = _batch()
    assert neg_snr(estimate, target, reduction="none").tolist() == pytest.approx(
        [0.0, -5.0, -10.0], abs=0.01
    )
    # SNR, unlike SI-SDR, punishes a wrong gain: half the target is 6.02 dB
    assert neg_snr(0.5 * target, target).item() == pytest.approx(-6.0206, abs=1e-3)
    lengths = torch.tensor([4000, 3000, 2000])
    garbage = estimate.clone()
    garbage[1, 3000:] = 9.0
    assert neg_snr(garbage, target, lengths=lengths).item() == pytest.approx(
        neg_snr(estimate, target, lengths=lengths).item(), abs=1e-9
    )
    estimate = estimate.clone().requires_grad_(True)
    neg_snr(estimate, target).backward()
    assert torch.isfinite(estimate.grad).all() and estimate.grad.abs().sum() > 0
