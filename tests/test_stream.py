"""usef.Stream (block-online extraction) and `usef stream`: determinism, latency bound, memory, CLI."""

from __future__ import annotations

import doctest
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from conftest import SR, build_tiny, speechlike

import usef
import usef.stream
from usef import audio
from usef.api import Extractor
from usef.bin.main import main as usef_main
from usef.stream import Stream, make_schedule, stream_offline

LATENCY = 0.4  # hop 0.1 s, cross-fade 0.05 s, lookahead 0.25 s at the defaults


@pytest.fixture(scope="module")
def extractor() -> Extractor:
    return Extractor(build_tiny(), name="tiny", device="cpu")


@pytest.fixture(scope="module")
def mixture() -> np.ndarray:
    return speechlike(3.3, SR, seed=1) + speechlike(3.3, SR, seed=2, f0=210.0)


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return speechlike(1.0, SR, seed=3, f0=125.0)


def _streamed(stream: Stream, wave: np.ndarray, chunk: int) -> np.ndarray:
    parts = [stream.push(wave[i : i + chunk]) for i in range(0, wave.shape[0], chunk)]
    return np.concatenate([*parts, stream.flush()])


def test_schedule_splits_the_latency():
    s = make_schedule(8000, 1.0)
    assert (s.hop, s.fade, s.lookahead, s.context) == (2000, 1000, 5000, 16000)
    assert s.latency == 8000 and s.window == 24000
    fade_in, fade_out = s.ramps()
    np.testing.assert_allclose(fade_in + fade_out, 1.0, atol=1e-7)
    with pytest.raises(ValueError, match="latency"):
        make_schedule(8000, 0.1, hop=0.08, crossfade=0.04)
    with pytest.raises(ValueError, match="crossfade"):
        make_schedule(8000, 1.0, hop=0.1, crossfade=0.2)
    with pytest.raises(ValueError, match="latency"):
        make_schedule(8000, float("nan"))


@pytest.mark.parametrize("chunk", [1, 160, 8000])
def test_any_chunking_equals_the_offline_schedule(extractor, mixture, reference, chunk):
    expected = stream_offline(extractor, mixture, reference, latency=LATENCY)
    got = _streamed(Stream(extractor, reference, latency=LATENCY), mixture, chunk)
    assert got.shape == mixture.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


def test_other_input_rate_resamples_both_ways(extractor, mixture, reference):
    rate = 11025
    wave = audio.resample(mixture, SR, rate)
    expected = stream_offline(extractor, wave, reference, latency=LATENCY, sample_rate=rate,
                              reference_sample_rate=SR)
    for chunk in (160, 777):
        stream = Stream(extractor, reference, latency=LATENCY, sample_rate=rate, reference_sample_rate=SR)
        got = _streamed(stream, wave, chunk)
        assert got.shape == wave.shape
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


def test_latency_is_a_hard_bound_at_the_model_rate(extractor, mixture, reference):
    stream = Stream(extractor, reference, latency=LATENCY)
    bound = round(LATENCY * SR)
    assert stream.latency_samples == bound
    pushed = returned = 0
    slack = []
    for i in range(0, mixture.shape[0], 7):
        chunk = mixture[i : i + 7]
        pushed += chunk.shape[0]
        returned += stream.push(chunk).shape[0]
        # every sample n with n + latency <= pushed (n = 0 .. pushed - latency) has been returned
        slack.append(returned - (pushed - bound + 1))
    assert min(slack) >= 0
    # one sample before the bound the next block has not run: a chunk of 7 can land 0..6 short
    assert min(slack[len(slack) // 2 :]) <= 6


def test_latency_bound_with_resamplers(extractor, mixture, reference):
    # other rates add what soxr holds back (documented in usef.stream); "QQ" holds back ~3 ms
    rate = 16000
    wave = audio.resample(mixture, SR, rate)
    stream = Stream(extractor, reference, latency=LATENCY, sample_rate=rate, reference_sample_rate=SR,
                    resample_quality="QQ")
    pushed = returned = 0
    for i in range(0, wave.shape[0], 37):
        pushed += 37
        returned += stream.push(wave[i : i + 37]).shape[0]
        assert returned >= min(pushed, wave.shape[0]) - round((LATENCY + 0.01) * rate)
    assert returned + stream.flush().shape[0] == wave.shape[0]


def test_one_block_equals_offline_extraction(extractor, mixture, reference):
    # a latency longer than the input: the flush block is the whole mixture, so the level matching
    # per block is exactly the offline API's
    expected = extractor.extract(mixture, reference, sample_rate=SR)
    stream = Stream(extractor, reference, latency=5.0, sample_rate=SR)
    got = _streamed(stream, mixture, 800)
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


def test_enrollment_and_reference_path(extractor, mixture, reference, tmp_path):
    enrollment = extractor.enroll(reference, sample_rate=SR, trim=False)
    expected = stream_offline(extractor, mixture, enrollment, latency=LATENCY)
    np.testing.assert_allclose(_streamed(Stream(extractor, enrollment, latency=LATENCY), mixture, 160),
                               expected, atol=1e-6, rtol=0)
    # a file reference is read at its own rate
    path = tmp_path / "ref.wav"
    sf.write(path, reference, SR, subtype="FLOAT")
    np.testing.assert_allclose(_streamed(Stream(extractor, str(path), latency=LATENCY), mixture, 160),
                               stream_offline(extractor, mixture, reference, latency=LATENCY), atol=1e-6, rtol=0)


def test_bounded_memory_over_ten_minutes(extractor, reference, monkeypatch):
    # the model is replaced by a gain of 0.5 (the buffers are under test, not the network): ten
    # minutes run in seconds, and complementary fades must give back exactly half the input
    monkeypatch.setattr(extractor, "_forward", lambda mixtures, condition, **_: 0.5 * mixtures)
    stream = Stream(extractor, reference, latency=1.0, context=2.0)
    window = stream.schedule.window
    rng = np.random.default_rng(0)
    chunk = 4000
    noise = rng.standard_normal(chunk * 7).astype(np.float32)
    worst = returned = 0
    total = 10 * 60 * SR
    for i in range(total // chunk):
        piece = noise[(i % 7) * chunk : (i % 7 + 1) * chunk]
        out = stream.push(piece)
        if out.size:
            start = returned % (7 * chunk)  # the output is the input (period 7 chunks) times 0.5
            expected = 0.5 * np.tile(noise, 2)[start : start + out.size]
            np.testing.assert_allclose(out, expected, atol=1e-6)
        returned += out.size
        worst = max(worst, stream.buffered_samples)
    assert worst <= window + chunk + stream.schedule.fade
    assert returned + stream.flush().size == total
    assert stream.buffered_samples == 0


def test_input_kinds_and_errors(extractor, mixture, reference):
    stream = Stream(extractor, reference, latency=LATENCY)
    as_int = np.round(mixture[:1600] * 32767).astype(np.int16)
    assert stream.push(np.stack([as_int, as_int])).dtype == np.float32  # (C, T) int16 is accepted
    with pytest.raises(ValueError, match="NaN"):
        stream.push(np.array([0.0, np.nan], np.float32))
    with pytest.raises(ValueError, match="shape"):
        stream.push(np.zeros((1, 2, 3), np.float32))
    stream.flush()
    with pytest.raises(RuntimeError, match="flushed"):
        stream.push(mixture[:10])
    with pytest.raises(ValueError, match="reference"):
        Stream(extractor, np.zeros(SR, np.float32), latency=LATENCY)  # silent reference
    with pytest.raises(ValueError, match="resample_quality"):
        Stream(extractor, reference, resample_quality="best")
    empty = Stream(extractor, reference, latency=LATENCY)
    assert empty.flush().shape == (0,)
    assert usef.Stream is Stream


def test_docstring_example_runs():
    # the example streams through the bundled default 8 kHz model
    result = doctest.testmod(usef.stream, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# -- command line ----------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path, mixture, reference):
    sf.write(tmp_path / "mix.wav", mixture, SR, subtype="FLOAT")
    sf.write(tmp_path / "ref.wav", reference, SR, subtype="FLOAT")
    return tmp_path


def test_cli_file_to_file(files, tiny_model_dir, mixture, reference, capsys):
    out = files / "out.wav"
    code = usef_main(["stream", "-i", str(files / "mix.wav"), "--reference", str(files / "ref.wav"),
                      "-o", str(out), "--model", str(tiny_model_dir), "--device", "cpu", "--latency", str(LATENCY),
                      "--float", "--read-seconds", "0.013"])
    assert code == 0, capsys.readouterr().err
    written, rate = sf.read(out, dtype="float32")
    extractor = usef.load_model(tiny_model_dir, device="cpu")
    expected = stream_offline(extractor, mixture, reference, latency=LATENCY)
    assert rate == SR
    np.testing.assert_allclose(written, expected, atol=1e-6, rtol=0)
    # an existing output needs --overwrite; a reference and an enrollment together are refused
    assert usef_main(["stream", "-i", str(files / "mix.wav"), "--reference", str(files / "ref.wav"),
                      "-o", str(out), "--model", str(tiny_model_dir)]) == 2
    assert usef_main(["stream", "-i", str(files / "mix.wav"), "--reference", str(files / "ref.wav"),
                      "--enrollment", "x.enroll", "-o", str(files / "o2.wav"), "--model", str(tiny_model_dir)]) == 2
    assert usef_main(["stream", "-i", "-", "--reference", str(files / "ref.wav"), "-o", "-",
                      "--model", str(tiny_model_dir)]) == 2  # raw stdin needs --raw-rate
    assert usef_main(["stream", "-i", str(files / "mix.wav"), "--reference", str(files / "ref.wav"),
                      "-o", str(files / "o3.wav"), "--model", str(tiny_model_dir), "--latency", "0.01",
                      "--hop", "0.1"]) == 2  # latency below the hop
    assert "usef stream: error" in capsys.readouterr().err


def test_cli_raw_stdin_to_stdout(files, tiny_model_dir, mixture, reference):
    pcm = np.clip(np.round(mixture * 32768), -32768, 32767).astype("<i2")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run(
        [sys.executable, "-m", "usef.bin.main", "stream", "-i", "-", "--raw-rate", str(SR), "--raw-format", "s16le",
         "--reference", str(files / "ref.wav"), "-o", "-", "--model", str(tiny_model_dir), "--device", "cpu",
         "--latency", str(LATENCY), "--threads", "1"],
        input=pcm.tobytes(), capture_output=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr.decode()
    got = np.frombuffer(done.stdout, dtype="<i2")
    extractor = usef.load_model(tiny_model_dir, device="cpu")
    expected = stream_offline(extractor, pcm.astype(np.float32) / 32768, reference, latency=LATENCY)
    assert got.shape == expected.shape
    reference_pcm = np.round(np.clip(expected, -1.0, 32767 / 32768) * 32768)
    assert np.max(np.abs(got - reference_pcm)) <= 1  # float rounding may move a sample by one step
