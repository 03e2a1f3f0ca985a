"""usef.extract / load_model / hub / audio: input kinds, rates, errors, chunking, memory."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import SR, build_tiny, speechlike

import usef
from usef import api, audio, hub
from usef.api import Extractor, _chunk_starts
from usef.audio import most_energetic_window

REPO = Path(__file__).resolve().parents[1]


def si_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    estimate, reference = estimate.astype(np.float64), reference.astype(np.float64)
    target = np.dot(estimate, reference) / np.dot(reference, reference) * reference
    return float(10 * np.log10(np.sum(target**2) / np.sum((estimate - target) ** 2)))


# -- input kinds and rates ------------------------------------------------------------------
def test_numpy_44k_round_trip_is_near_identity(near_identity_model_dir):
    mixture = speechlike(1.5, 44100, seed=4)
    reference = speechlike(1.0, 44100, seed=5)
    out = usef.extract(mixture, reference, sample_rate=44100, model=near_identity_model_dir, device="cpu")
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    assert out.shape == mixture.shape
    # 44.1k -> 8k -> model ~ identity -> 44.1k: content below 3.5 kHz survives, aligned in time
    assert si_sdr(out, mixture) > 15.0


def test_tensor_in_tensor_out_same_dtype_and_length(tiny_model_dir):
    mixture = torch.from_numpy(speechlike(1.3, 44100, seed=6)).double()
    reference = torch.from_numpy(speechlike(0.8, 44100, seed=7))
    out = usef.extract(mixture, reference, sample_rate=44100, model=tiny_model_dir, device="cpu")
    assert isinstance(out, torch.Tensor)
    assert out.dtype == torch.float64 and out.device == mixture.device
    assert out.shape == mixture.shape and torch.isfinite(out).all()


def test_paths_carry_their_own_rates(tmp_path, tiny_model_dir):
    mix_path, ref_path = tmp_path / "mix.wav", tmp_path / "ref.flac"
    sf.write(mix_path, speechlike(1.2, 16000, seed=8), 16000)
    sf.write(ref_path, speechlike(1.0, 22050, seed=9), 22050)
    out = usef.extract(str(mix_path), ref_path, model=tiny_model_dir, device="cpu")
    assert isinstance(out, np.ndarray) and out.shape == (int(1.2 * 16000),)


def test_list_in_list_out_matches_single_calls(tiny_model_dir, signals):
    extractor = usef.load_model(tiny_model_dir, device="cpu")
    mixtures = [signals["mixture"], signals["mixture"][::-1].copy(), signals["mixture"][:12000]]
    references = [signals["reference"], signals["reference"][:6000], signals["reference"]]
    batch = extractor.extract(mixtures, references, sample_rate=SR)
    assert isinstance(batch, list) and len(batch) == 3
    for mixture, reference, out in zip(mixtures, references, batch):
        single = extractor.extract(mixture, reference, sample_rate=SR)
        assert out.shape == mixture.shape
        np.testing.assert_allclose(out, single, atol=1e-4)


def test_stereo_channels_first_is_averaged(tiny_model_dir, signals):
    extractor = usef.load_model(tiny_model_dir, device="cpu")
    left, right = signals["mixture"], signals["target"]
    stereo = extractor.extract(np.stack([left, right]), signals["reference"], sample_rate=SR)
    mono = extractor.extract((left + right) / 2, signals["reference"], sample_rate=SR)
    np.testing.assert_allclose(stereo, mono, atol=1e-5)


def test_silent_mixture_gives_silence_and_clipped_input_is_finite(tiny_model_dir, signals):
    extractor = usef.load_model(tiny_model_dir, device="cpu")
    silent = extractor.extract(np.zeros(SR, np.float32), signals["reference"], sample_rate=SR)
    assert silent.shape == (SR,) and not np.any(silent)
    clipped = np.clip(signals["mixture"] * 20, -1.0, 1.0)
    out = extractor.extract(clipped, signals["reference"], sample_rate=SR)
    assert np.isfinite(out).all() and np.any(out)


# -- bad inputs ------------------------------------------------------------------------------
def _bad_cases(tmp_path):
    good = speechlike(1.0, SR)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00 definitely not audio" * 10)
    nan = good.copy()
    nan[10] = np.nan
    inf = good.copy()
    inf[20] = np.inf
    return {
        "empty mixture": ({"mixture": np.zeros(0, np.float32)}, ValueError, "mixture"),
        "nan mixture": ({"mixture": nan}, ValueError, "mixture"),
        "inf reference": ({"reference": inf}, ValueError, "reference"),
        "missing file": ({"mixture": str(tmp_path / "nope.wav")}, FileNotFoundError, "mixture"),
        "corrupt file": ({"reference": corrupt}, ValueError, "reference"),
        "no sample_rate": ({"sample_rate": None}, ValueError, "sample_rate"),
        "3-D array": ({"mixture": good.reshape(1, 1, -1)}, ValueError, "mixture"),
        "(T, C) layout": ({"mixture": np.stack([good, good], axis=1)}, ValueError, "(C, T)"),
        "short reference": ({"reference": good[: SR // 10]}, ValueError, "0.500 s"),
        "silent reference": ({"reference": np.zeros(SR, np.float32)}, ValueError, "reference"),
        "no reference": ({"reference": None}, ValueError, "reference"),
        "not audio type": ({"mixture": [0.1, 0.2]}, TypeError, "mixture"),
    }


@pytest.mark.parametrize("case", [
    "empty mixture", "nan mixture", "inf reference", "missing file", "corrupt file",
    "no sample_rate", "3-D array", "(T, C) layout", "short reference", "silent reference",
    "no reference", "not audio type",
])
def test_bad_inputs_name_the_argument(case, tmp_path, tiny_model_dir):
    changes, error, fragment = _bad_cases(tmp_path)[case]
    kwargs = {"mixture": speechlike(1.0, SR), "reference": speechlike(1.0, SR, seed=3), "sample_rate": SR}
    kwargs.update(changes)
    extractor = usef.load_model(tiny_model_dir, device="cpu")
    with pytest.raises(error) as info:
        if case == "not audio type":  # a list is a batch; its element has the wrong type
            kwargs["mixture"] = [kwargs["mixture"]]
            kwargs["reference"] = [kwargs["reference"]]
        extractor.extract(kwargs.pop("mixture"), kwargs.pop("reference"), **kwargs)
    assert fragment in str(info.value)


def test_nan_model_output_is_replaced_and_logged(caplog, signals):
    model = build_tiny(identity="exact")
    with torch.no_grad():
        model.separator.output.bias.fill_(float("nan"))
    with caplog.at_level(logging.WARNING, logger="usef.api"):
        out = Extractor(model).extract(signals["mixture"], signals["reference"], sample_rate=SR)
    assert np.isfinite(out).all() and not np.any(out)
    assert "NaN" in caplog.text


# -- embedding models ------------------------------------------------------------------------
def test_embedding_model_accepts_array_tensor_and_npy(tmp_path, embedding_model_dir, signals):
    extractor = usef.load_model(embedding_model_dir, device="cpu")
    vector = np.random.default_rng(0).standard_normal(extractor.model.embedding_dim).astype(np.float32)
    np.save(tmp_path / "spk.npy", vector)
    from_array = extractor.extract(signals["mixture"], embedding=vector, sample_rate=SR)
    from_tensor = extractor.extract(signals["mixture"], embedding=torch.from_numpy(vector[None]), sample_rate=SR)
    from_file = extractor.extract(signals["mixture"], embedding=tmp_path / "spk.npy", sample_rate=SR)
    np.testing.assert_allclose(from_array, from_tensor, atol=1e-6)
    np.testing.assert_allclose(from_array, from_file, atol=1e-6)
    with pytest.raises(ValueError, match="embedding"):
        extractor.extract(signals["mixture"], embedding=vector[:-1], sample_rate=SR)


def test_reference_model_refuses_embedding(tiny_model_dir, signals):
    extractor = usef.load_model(tiny_model_dir, device="cpu")
    with pytest.raises(ValueError, match="embedding"):
        extractor.extract(signals["mixture"], embedding=np.ones(8, np.float32), sample_rate=SR)


# -- long audio --------------------------------------------------------------------------------
def test_chunk_starts_cover_the_signal_with_bounded_overlap():
    for total, chunk, overlap in [(1000, 300, 75), (1001, 300, 150), (601, 300, 0), (5000, 700, 175)]:
        starts = _chunk_starts(total, chunk, overlap)
        assert starts[0] == 0 and starts[-1] + chunk == total
        for k in range(1, len(starts)):
            assert starts[k - 1] < starts[k] <= starts[k - 1] + chunk - overlap


def test_chunked_overlap_add_is_exact_for_a_context_free_model(signals):
    extractor = Extractor(build_tiny(identity="exact"), chunk_seconds=3.0, batch_size=3)
    mixture = np.tile(signals["mixture"], 8)[: int(15.3 * SR)]
    for overlap in (0.0, 0.25, 0.5):
        extractor.overlap = overlap
        out = extractor.extract(mixture, signals["reference"], sample_rate=SR)
        np.testing.assert_allclose(out, mixture, atol=1e-5)


def test_chunked_matches_whole_on_60_seconds(near_identity_model_dir):
    extractor = usef.load_model(near_identity_model_dir, device="cpu")
    target = np.concatenate([speechlike(6.0, SR, seed=s) for s in range(10)])
    mixture = target + 0.5 * np.concatenate([speechlike(6.0, SR, seed=50 + s, f0=220) for s in range(10)])
    reference = speechlike(2.0, SR, seed=99)
    whole = extractor.extract(mixture, reference, sample_rate=SR, chunk_seconds=61.0)
    chunked = extractor.extract(mixture, reference, sample_rate=SR, chunk_seconds=8.0)
    assert chunked.shape == whole.shape == mixture.shape
    assert si_sdr(chunked, whole) > 25.0
    assert abs(si_sdr(chunked, target) - si_sdr(whole, target)) < 0.5


def test_most_energetic_window_is_kept():
    quiet = 0.01 * speechlike(40.0, SR, seed=1)
    quiet[int(25 * SR) : int(27 * SR)] *= 100.0  # a loud burst at 25-27 s
    cropped = most_energetic_window(quiet, SR, 10.0)
    assert cropped.shape == (10 * SR,)
    assert np.max(np.abs(cropped)) == pytest.approx(np.max(np.abs(quiet)))


def test_one_hour_mixture_stays_under_2_gb(tmp_path):
    # A stub that honours the contract keeps this about the API's memory, not the model's speed.
    script = textwrap.dedent(
        """
        import resource, sys, numpy as np, torch
        sys.path.insert(0, sys.argv[1])
        from usef.api import Extractor

        class Stub(torch.nn.Module):
            sample_rate, min_reference_samples, embedding_dim, name = 8000, 4000, None, "stub"
            def __init__(self):
                super().__init__()
                self.gain = torch.nn.Parameter(torch.tensor(0.5))
            def prepare_condition(self, reference=None, reference_lengths=None, embedding=None):
                return {"scale": self.gain * reference.abs().max() / reference.abs().max()}
            def extract(self, mixture, condition):
                return mixture * condition["scale"]

        rng = np.random.default_rng(0)
        mixture = rng.standard_normal(3600 * 8000, dtype=np.float32) * 0.1
        reference = rng.standard_normal(120 * 8000, dtype=np.float32) * 0.1
        out = Extractor(Stub(), level="model").extract(mixture, reference, sample_rate=8000)
        assert out.shape == mixture.shape and np.allclose(out[::1000], 0.5 * mixture[::1000])
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
        """
    )
    result = subprocess.run([sys.executable, "-c", script, str(REPO)], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) < 2048


# -- hub and load_model ----------------------------------------------------------------------
def test_default_model_depends_on_rate_and_errors_clearly(tmp_path, monkeypatch, tiny_model_dir, caplog):
    monkeypatch.setenv("USEF_PRETRAINED_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="no bundled default model is installed yet"):
        hub.resolve_model("default", 16000)
    for name in (hub.DEFAULT_8K, hub.DEFAULT_16K):
        (tmp_path / name).mkdir()
        for file in ("model.safetensors", "config.yaml"):
            (tmp_path / name / file).write_bytes((Path(tiny_model_dir) / file).read_bytes())
    assert usef.list_models() == sorted([hub.DEFAULT_8K, hub.DEFAULT_16K])
    assert hub.default_model_name(8000) == hub.DEFAULT_8K
    assert hub.default_model_name(44100) == hub.DEFAULT_16K
    assert hub.resolve_model("default", 8000) == (tmp_path / hub.DEFAULT_8K).resolve()
    with pytest.raises(ValueError, match=hub.DEFAULT_16K):
        hub.resolve_model("no-such-model")
    assert usef.load_model(hub.DEFAULT_8K, device="cpu").name == hub.DEFAULT_8K
    # the API says which model "default" became for the input's rate
    with caplog.at_level("INFO", logger="usef"):
        assert usef.load_model("default", device="cpu", sample_rate=16000).name == hub.DEFAULT_16K
    assert f"model 'default' for 16000 Hz input: {hub.DEFAULT_16K}" in caplog.text
    assert f"using model {hub.DEFAULT_16K}" in caplog.text


def test_load_model_caches_weights_and_extracts_repeatedly(tiny_model_dir, signals):
    first = usef.load_model(tiny_model_dir, device="cpu")
    second = usef.load_model(str(tiny_model_dir), device="cpu")
    assert first.model is second.model and first.sample_rate == SR
    a = usef.extract(signals["mixture"], signals["reference"], sample_rate=SR, model=first)
    b = first.extract(signals["mixture"], signals["reference"], sample_rate=SR)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="lacks"):
        usef.load_model(Path(tiny_model_dir).parent, device="cpu")


# -- audio helpers -----------------------------------------------------------------------------
def test_write_audio_is_atomic_and_round_trips(tmp_path):
    wave = speechlike(0.5, SR)
    path = audio.write_audio(tmp_path / "sub" / "x.wav", wave, SR)
    back, rate = audio.load_audio(path)
    assert rate == SR and np.max(np.abs(back - wave)) < 1e-4
    assert [p.name for p in path.parent.iterdir()] == ["x.wav"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    audio.write_audio(path, np.stack([wave, -wave]), SR, float_wav=True)
    assert sf.info(path).subtype == "FLOAT" and sf.info(path).channels == 2
    mono, _ = audio.load_audio(path)
    np.testing.assert_allclose(mono, 0.0, atol=1e-7)  # (x + -x) / 2


def test_resample_length_and_api_exports():
    assert audio.resample(np.zeros(44100, np.float32), 44100, 8000).shape == (8000,)
    assert set(usef.__all__) >= {"extract", "load_model", "list_models", "__version__"}
    assert usef.extract is api.extract


def test_write_audio_scales_instead_of_clipping(tmp_path):
    import soundfile

    from usef.audio import write_audio

    wave = np.sin(np.linspace(0, 20 * np.pi, 800)).astype(np.float32) * 2.0  # peak 2: over full scale
    write_audio(tmp_path / "loud.wav", wave, 8000)
    written, _ = soundfile.read(tmp_path / "loud.wav", dtype="float32")
    assert abs(np.max(np.abs(written)) - 0.999) < 1e-3
    # a scaled copy of the input, not a clipped one
    assert np.allclose(written, wave * (0.999 / 2.0), atol=1e-4)


# -- output level ------------------------------------------------------------------------------
class _LoudStub(torch.nn.Module):
    """Returns ``gain`` x (the mixture minus a known interferer): the target, too loud (or inverted)."""

    sample_rate, min_reference_samples, embedding_dim, name, needs_reference = SR, 0, None, "loud", True

    def __init__(self, interferer: np.ndarray, gain: float):
        super().__init__()
        self.interferer, self.gain = torch.from_numpy(interferer.astype(np.float32)), gain
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def prepare_condition(self, reference=None, reference_lengths=None, embedding=None):
        return None

    def extract(self, mixture, condition):
        return self.gain * (mixture - self.interferer[: mixture.shape[-1]])


@pytest.mark.parametrize("gain", [30.0, -4.0, 0.01])
def test_estimate_comes_back_at_the_targets_level(gain):
    # SI-SDR training leaves the gain free: the bundled models came out 9-15 dB too loud and
    # one inverted; a user expects the target's level (and polarity) in the mixture
    target = speechlike(3.0, SR, seed=1)
    interferer = 1.5 * speechlike(3.0, SR, seed=2, f0=230)
    mixture = target + interferer
    out = Extractor(_LoudStub(interferer, gain)).extract(mixture, speechlike(1.0, SR), sample_rate=SR)
    level = 20 * np.log10(np.std(out) / np.std(target))
    assert abs(level) < 0.5 and np.dot(out, target) > 0
    raw = Extractor(_LoudStub(interferer, gain), level="model").extract(mixture, speechlike(1.0, SR), sample_rate=SR)
    np.testing.assert_allclose(raw, gain * target, rtol=1e-4, atol=1e-4 * abs(gain))


def test_level_never_exceeds_full_scale_when_the_mixture_leaves_headroom():
    target = speechlike(3.0, SR, seed=3)
    target *= 3.0 / np.max(np.abs(target))  # a "target" louder than full scale...
    interferer = -0.9 * target + 0.01 * speechlike(3.0, SR, seed=4, f0=230)  # ...cancelled in the mix
    mixture = target + interferer
    assert np.max(np.abs(mixture)) <= 0.9
    extractor = Extractor(_LoudStub(interferer, 10.0))  # runs at SR: inputs are resampled to it
    for rate in (SR, 44100):  # at 44.1 kHz the resampled estimate must not overshoot either
        mix = audio.resample(mixture.astype(np.float32), SR, rate)
        out = extractor.extract(mix, speechlike(1.0, rate), sample_rate=rate)
        assert np.max(np.abs(out)) <= 1.0


def test_match_level_known_answers_and_leak_robustness():
    rng = np.random.default_rng(0)
    target = speechlike(3.0, SR, seed=1, f0=120)  # harmonics below 1.4 kHz
    t = np.arange(target.size) / SR
    interferer = np.sin(2 * np.pi * 2900 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 1.3 * t))  # far above it
    interferer *= np.std(target) / np.std(interferer)  # 0 dB SIR
    mixture = target + interferer
    # an exact (too loud, inverted) target comes back at the target's level and polarity
    np.testing.assert_allclose(audio.match_level(-9.0 * target, mixture), target, atol=0.02 * np.abs(target).max())
    # a leak of the other talker: the plain least-squares gain counts it as signal (+1.5 dB here);
    # the power-weighted median over STFT bins does not
    leaky = 7.0 * (target + 0.3 * interferer)
    plain = np.dot(leaky, mixture) / np.dot(leaky, leaky) * leaky
    fitted = audio.match_level(leaky, mixture)
    target_part = np.dot(fitted, target) / np.dot(target, target)  # gain on the target itself
    plain_part = np.dot(plain, target) / np.dot(target, target)
    assert abs(20 * np.log10(target_part)) < 0.5 < abs(20 * np.log10(plain_part))
    # rows are independent; silence stays silence; shapes must agree
    batch = np.stack([3.0 * target, -0.5 * target])
    out = audio.match_level(batch, np.stack([mixture, mixture]))
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)
    assert not np.any(audio.match_level(np.zeros(1000), rng.standard_normal(1000)))
    with pytest.raises(ValueError, match="one shape"):
        audio.match_level(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="level"):
        Extractor(_LoudStub(np.zeros(8), 1.0), level="loud")


# -- numeric options and per-item defaults -------------------------------------------------------
@pytest.mark.parametrize("chunk", [0.0, -1.0, 1e-5, float("nan"), True])
def test_tiny_or_bad_chunk_seconds_is_refused_not_a_hang(tiny_model_dir, signals, chunk):
    # chunk_seconds=1e-5 looped forever while memory grew ~170 MB/s
    extractor = usef.load_model(tiny_model_dir, device="cpu")
    with pytest.raises(ValueError, match="chunk_seconds"):
        extractor.extract(signals["mixture"], signals["reference"], sample_rate=SR, chunk_seconds=chunk)
    with pytest.raises(ValueError, match="chunk_seconds"):
        Extractor(extractor.model, chunk_seconds=chunk)


@pytest.mark.parametrize("rate", [True, 1, 0, -8000, float("nan"), 8000.5, 10_000_000, "8000"])
def test_absurd_sample_rates_are_refused(tiny_model_dir, signals, rate):
    # sample_rate=True was accepted: a 4 s clip became an 8.9-hour job
    with pytest.raises(ValueError, match="sample_rate"):
        usef.extract(signals["mixture"], signals["reference"], sample_rate=rate, model=tiny_model_dir)


def test_progress_is_reported_per_chunk_batch(tiny_model_dir, signals):
    extractor = usef.load_model(tiny_model_dir, device="cpu", chunk_seconds=1.0, batch_size=2)
    mixture = np.tile(signals["mixture"], 6)
    calls = []
    extractor.extract(mixture, signals["reference"], sample_rate=SR, progress=lambda d, n: calls.append((d, n)))
    total = calls[-1][1]
    assert total > 2 and calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted({d for d, _ in calls})


def test_default_list_is_served_per_item_rate(tmp_path, monkeypatch, tiny_model_dir, signals):
    # the default was picked from the first item's rate for the whole list
    monkeypatch.setenv("USEF_PRETRAINED_DIR", str(tmp_path))
    for name in (hub.DEFAULT_8K, hub.DEFAULT_16K):
        (tmp_path / name).mkdir()
        for file in ("model.safetensors", "config.yaml"):
            (tmp_path / name / file).write_bytes((Path(tiny_model_dir) / file).read_bytes())
    used = []
    real = api.load_model
    monkeypatch.setattr(api, "load_model", lambda *a, **k: used.append(k.get("sample_rate")) or real(*a, **k))
    paths = []
    for i, rate in enumerate((16000, 8000, 16000)):
        sf.write(tmp_path / f"m{i}.wav", audio.resample(signals["mixture"], SR, rate), rate)
        paths.append(str(tmp_path / f"m{i}.wav"))
    outs = usef.extract(paths, signals["reference"], sample_rate=SR, device="cpu")
    assert sorted(used) == [8000, 16000]
    assert [len(o) for o in outs] == [sf.info(p).frames for p in paths]
