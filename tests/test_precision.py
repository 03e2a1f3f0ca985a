"""``precision="bf16"``: the model passes under bfloat16 autocast, everything after them in float32."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

import usef
from tests.conftest import SR, extract_command
from usef.stream import Stream, stream_offline


def _snr_db(estimate: np.ndarray, reference: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference**2) / max(np.sum((estimate - reference) ** 2), 1e-30)))


def test_bf16_runs_the_model_in_bfloat16_and_stays_close_to_fp32(near_identity_model_dir, signals):
    mixture, reference = signals["mixture"], signals["reference"]
    full = usef.load_model(near_identity_model_dir, device="cpu")
    half = usef.load_model(near_identity_model_dir, device="cpu", precision="bf16")
    assert half.precision == "bf16" and "bf16" in repr(half) and full.precision == "fp32"
    a = full.extract(mixture, reference, sample_rate=SR)
    b = half.extract(mixture, reference, sample_rate=SR)
    assert b.dtype == np.float32 and b.shape == a.shape
    # bfloat16 keeps 8 bits of mantissa: different samples (autocast was on), the same signal
    assert not np.allclose(a, b, atol=1e-5)
    assert _snr_db(b, a) > 20.0
    # the confidence cues are energies of further passes: within a dB of fp32's
    cues_a = full.extract(mixture, reference, sample_rate=SR, return_features=True)[1]
    cues_b = half.extract(mixture, reference, sample_rate=SR, return_features=True)[1]
    np.testing.assert_allclose(cues_b, cues_a, atol=1.0)


def test_bf16_chunks_and_streams_like_its_own_whole_run(near_identity_model_dir, signals):
    half = usef.load_model(near_identity_model_dir, device="cpu", precision="bf16")
    mixture, reference = np.tile(signals["mixture"], 3), signals["reference"]
    whole = half.extract(mixture, reference, sample_rate=SR)
    chunked = half.extract(mixture, reference, sample_rate=SR, chunk_seconds=2.5)
    assert _snr_db(chunked, whole) > 20.0
    stream = Stream(half, reference, latency=0.5, sample_rate=SR)
    pieces = [stream.push(mixture[i : i + 700]) for i in range(0, len(mixture), 700)]
    streamed = np.concatenate([*pieces, stream.flush()])
    np.testing.assert_allclose(streamed, stream_offline(half, mixture, reference, latency=0.5), atol=1e-6)


def test_unknown_precision_raises(tiny_model_dir):
    with pytest.raises(ValueError, match="precision"):
        usef.load_model(tiny_model_dir, device="cpu", precision="fp16")


def test_the_command_lines_offer_the_apis_precisions():
    from usef.api import PRECISIONS
    from usef.bin import PRECISION_CHOICES

    assert PRECISION_CHOICES == PRECISIONS


def test_cli_precision(tiny_model_dir, signals, tmp_path):
    from usef.bin.main import main

    args = extract_command(tiny_model_dir, signals, tmp_path)
    assert main([*args, "-o", str(tmp_path / "half.wav"), "--precision", "bf16"]) == 0
    got, _ = sf.read(tmp_path / "half.wav", dtype="float32")
    expected = usef.load_model(tiny_model_dir, device="cpu", precision="bf16").extract(
        str(tmp_path / "mix.wav"), str(tmp_path / "ref.wav"))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert main([*args, "-o", str(tmp_path / "x.wav"), "--precision", "fp16"]) == 2
    # usef stream takes it too: the same as a stream of a bf16 extractor
    assert main(["stream", "-i", str(tmp_path / "mix.wav"), "--reference", str(tmp_path / "ref.wav"), "-o",
                 str(tmp_path / "streamed.wav"), "--model", str(tiny_model_dir), "--device", "cpu", "--latency",
                 "0.5", "--float", "--precision", "bf16"]) == 0
    streamed, _ = sf.read(tmp_path / "streamed.wav", dtype="float32")
    half = usef.load_model(tiny_model_dir, device="cpu", precision="bf16")
    mixture, reference = (sf.read(tmp_path / name, dtype="float32")[0] for name in ("mix.wav", "ref.wav"))
    np.testing.assert_allclose(streamed, stream_offline(half, mixture, reference, latency=0.5), atol=1e-6)
    assert main([*args, "-o", str(tmp_path / "y.wav"), "--precision", "bf16", "--backend", "onnx"]) == 2
