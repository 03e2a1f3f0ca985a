"""Frame-grid shift averaging (``shifts``): the model method, the API default from a model card,
the stream and the command lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import usef
from tests.conftest import SR, build_tiny, extract_command, speechlike
from usef import api
from usef.checkpoint import CheckpointError, load_pretrained, save_pretrained


@pytest.fixture(scope="module")
def tiny():
    return build_tiny(seed=3)


def _condition(model, reference: np.ndarray):
    return model.prepare_condition(torch.from_numpy(reference)[None])


def test_shifts_average_the_offset_grids_by_hand(tiny):
    mixture = torch.from_numpy(np.stack([speechlike(1.3, seed=1) + speechlike(1.3, seed=2, f0=230.0),
                                         speechlike(1.3, seed=4, f0=180.0)]))
    # (B, T_mix)
    condition = model_condition = _condition(tiny, speechlike(0.9, seed=3))
    with torch.inference_mode():
        plain = tiny.extract(mixture, condition)
        assert torch.equal(tiny.extract(mixture, model_condition, shifts=1), plain)
        hop = tiny.stft.hop_length
        by_hand = []
        for offset in (0, hop // 3, 2 * hop // 3):
            delayed = torch.cat([torch.zeros(2, offset), mixture], dim=1)
            by_hand.append(tiny.extract(delayed, condition)[:, offset:])
        got = tiny.extract(mixture, condition, shifts=3)
    assert got.shape == mixture.shape
    assert torch.allclose(got, sum(by_hand) / 3, atol=1e-6)
    # the offsets really change the output: otherwise averaging would buy nothing
    assert (by_hand[1] - plain).abs().max() > 1e-4


def test_shifts_keep_an_identity_model_exact():
    model = build_tiny(identity="exact")
    mixture = torch.from_numpy(speechlike(1.0, seed=5))[None]
    condition = _condition(model, speechlike(0.7, seed=6))
    with torch.inference_mode():
        out = model.extract(mixture, condition, shifts=4)
    assert torch.allclose(out, mixture, atol=1e-5)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "2", None])
def test_bad_shifts_raise(tiny, bad):
    condition = _condition(tiny, speechlike(0.7, seed=6))
    with pytest.raises(ValueError, match="shifts"):
        tiny.extract(torch.zeros(1, 4000), condition, shifts=bad)
    if bad is not None:
        with pytest.raises(ValueError, match="shifts"):
            api.Extractor(tiny, shifts=bad)
    with pytest.raises(ValueError, match="shifts"):
        api.Extractor(tiny, shifts=tiny.stft.hop_length + 1)


def test_model_card_sets_the_default_and_callers_override_it(tiny, tmp_path):
    folder = save_pretrained(tiny, tmp_path / "m") or tmp_path / "m"
    config_path = Path(folder) / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["shifts"] = 2
    config_path.write_text(yaml.safe_dump(config))
    assert load_pretrained(folder).inference_shifts == 2
    mixture = speechlike(1.5, seed=1) + speechlike(1.5, seed=2, f0=230.0)
    reference = speechlike(0.9, seed=3)
    carded = usef.load_model(folder, device="cpu")
    assert carded.shifts == 2
    two = api.Extractor(tiny, shifts=2).extract(mixture, reference, sample_rate=SR)
    one = api.Extractor(tiny).extract(mixture, reference, sample_rate=SR)
    np.testing.assert_array_equal(carded.extract(mixture, reference, sample_rate=SR), two)
    np.testing.assert_array_equal(usef.load_model(folder, device="cpu", shifts=1)
                                  .extract(mixture, reference, sample_rate=SR), one)
    assert not np.array_equal(one, two)
    # chunked: every chunk is shift-averaged the same way
    chunked = carded.extract(np.tile(mixture, 3), reference, sample_rate=SR, chunk_seconds=2.0)
    assert chunked.shape == (3 * mixture.size,) and np.isfinite(chunked).all()
    for bad in (0, "four", True):
        config["shifts"] = bad
        config_path.write_text(yaml.safe_dump(config))
        with pytest.raises(CheckpointError, match="shifts"):
            load_pretrained(folder)


def test_stream_with_shifts_matches_its_offline_reference(tiny):
    from usef.stream import Stream, stream_offline

    extractor = api.Extractor(tiny)
    mixture = speechlike(3.0, seed=1) + speechlike(3.0, seed=2, f0=230.0)
    reference = speechlike(1.0, seed=3)
    stream = Stream(extractor, reference, latency=0.5, shifts=2)
    pieces = [stream.push(mixture[i : i + 777]) for i in range(0, mixture.size, 777)] + [stream.flush()]
    streamed = np.concatenate(pieces)
    offline = stream_offline(extractor, mixture, reference, latency=0.5, shifts=2)
    np.testing.assert_allclose(streamed, offline, atol=1e-6)
    assert not np.allclose(offline, stream_offline(extractor, mixture, reference, latency=0.5), atol=1e-4)
    with pytest.raises(ValueError, match="shifts"):
        Stream(extractor, reference, latency=0.5, shifts=0)


def test_cli_shifts(tiny_model_dir, signals, tmp_path):
    import soundfile as sf

    from usef.bin.main import main

    args = extract_command(tiny_model_dir, signals, tmp_path)
    assert main([*args, "-o", str(tmp_path / "s3.wav"), "--shifts", "3"]) == 0
    got, _ = sf.read(tmp_path / "s3.wav", dtype="float32")
    shifted = usef.load_model(tiny_model_dir, device="cpu", shifts=3)
    expected = shifted.extract(str(tmp_path / "mix.wav"), str(tmp_path / "ref.wav"))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert main([*args, "-o", str(tmp_path / "s0.wav"), "--shifts", "0"]) == 2
