"""ONNX export (usef.onnx_export, usef export) and the torch-free runtime (usef.onnx_runtime).

The runtime must give what the torch API gives (same chunking, output level and resampling) up to
float rounding: every comparison allows 1e-4 of the torch output's peak.
"""

from __future__ import annotations

import json
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

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from usef import api
from usef import onnx_runtime as rt
from usef.modules.stft import STFTCodec
from usef.onnx_export import check_exportable, export_onnx

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4


def relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    assert got.shape == expected.shape
    return float(np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-12))


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """The conftest tiny usef_conformer (mask output) and its export."""
    model = build_tiny()
    directory = export_onnx(model, tmp_path_factory.mktemp("onnx") / "tiny", name="tiny")
    return model, directory


def test_constants_agree_with_the_torch_api():
    assert rt.DEFAULT_CHUNK_SECONDS == api.DEFAULT_CHUNK_SECONDS
    assert rt.DEFAULT_OVERLAP == api.DEFAULT_OVERLAP
    assert rt.DEFAULT_MAX_REFERENCE_SECONDS == api.DEFAULT_MAX_REFERENCE_SECONDS
    assert rt.MIN_CHUNK_SECONDS == api.MIN_CHUNK_SECONDS
    assert (rt.MIN_SAMPLE_RATE, rt.MAX_SAMPLE_RATE) == (api.MIN_SAMPLE_RATE, api.MAX_SAMPLE_RATE)
    assert rt._FULL_SCALE == api._FULL_SCALE and rt._MIN_MIXTURE_SECONDS == api._MIN_MIXTURE_SECONDS
    assert rt._chunk_starts(1000, 300, 75) == api._chunk_starts(1000, 300, 75)


@pytest.mark.parametrize(("n_fft", "hop", "win"), [(64, 32, None), (256, 128, None), (512, 128, 400), (100, 30, None)])
@pytest.mark.parametrize("length", [257, 1000, 1601])
def test_numpy_stft_and_istft_match_torch(n_fft, hop, win, length):
    codec = STFTCodec(n_fft, hop, win)
    window = rt.hann_window(codec.win_length, n_fft)
    wave = np.random.default_rng(length).standard_normal((2, length)).astype(np.float32)
    expected = codec.encode(torch.from_numpy(wave)).numpy()
    spec = rt.stft(wave, n_fft, hop, window)
    assert relative_error(spec, expected) < 1e-5
    # a spectrum that is no STFT of anything (random), as a separator's output is
    noisy = expected + np.random.default_rng(1).standard_normal(expected.shape).astype(np.float32)
    back = codec.decode(torch.from_numpy(noisy), length).numpy()
    assert relative_error(rt.istft(noisy, length, n_fft, hop, window), back) < 1e-5


def test_normalise_matches_the_model():
    from usef.models.base import normalise

    wave = np.random.default_rng(0).standard_normal((3, 777)).astype(np.float32) * [[0.1], [1.0], [3.0]]
    expected, scale = normalise(torch.from_numpy(wave.astype(np.float32)))
    got, got_scale = rt.normalise(wave)
    assert relative_error(got, expected.numpy()) < 1e-6 and relative_error(got_scale, scale.numpy()) < 1e-6


def test_export_writes_the_folder_and_keeps_the_model(tiny_onnx):
    model, directory = tiny_onnx
    assert rt.is_onnx_dir(directory)
    config = json.loads((directory / "config.json").read_text())
    assert config["sample_rate"] == SR and config["n_fft"] == model.stft.n_fft
    assert config["hop_length"] == model.stft.hop_length and config["window"] == "hann"
    assert config["model"] == "tiny" and config["opset"] >= 17 and config["verified_relative_error"] < TOLERANCE
    assert not model.training
    trained = build_tiny().train()
    check_exportable(trained)
    with pytest.raises(ValueError, match="Conformer separator"):
        check_exportable(build_tiny("dvector_conformer"))
    with pytest.raises(ValueError, match="opset"):
        export_onnx(trained, directory / "never", opset=13)


@pytest.mark.parametrize("kind", ["random", "speech"])
@pytest.mark.parametrize(("seconds", "chunk_seconds"), [(0.05, None), (1001 / SR, None), (2.3, 1.0)])
def test_onnx_matches_torch(tiny_onnx, kind, seconds, chunk_seconds):
    model, directory = tiny_onnx
    length = round(seconds * SR)
    rng = np.random.default_rng(length)
    if kind == "random":
        mixture = 0.3 * rng.standard_normal(length).astype(np.float32)
        reference = 0.3 * rng.standard_normal(SR + 123).astype(np.float32)
    else:
        mixture = speechlike(length / SR, seed=1, f0=120.0) + speechlike(length / SR, seed=2, f0=210.0)
        reference = speechlike(1.3, seed=3, f0=125.0)
    torch_out = api.Extractor(model).extract(mixture, reference, sample_rate=SR, chunk_seconds=chunk_seconds)
    onnx_out = rt.OnnxExtractor(directory, threads=1).extract(mixture, reference, sample_rate=SR,
                                                               chunk_seconds=chunk_seconds)
    assert onnx_out.dtype == np.float32 and onnx_out.shape == (length,)
    assert relative_error(onnx_out, torch_out) <= TOLERANCE


def test_onnx_matches_torch_across_rates_levels_and_lists(tiny_onnx):
    model, directory = tiny_onnx
    mixture = speechlike(1.7, 16000, seed=4) + speechlike(1.7, 16000, seed=5, f0=220.0)
    reference = np.stack([speechlike(1.1, 11025, seed=6)] * 2)  # (C, T), at another rate
    for level in ("mixture", "model"):
        torch_out = api.Extractor(model, level=level).extract(mixture, reference, sample_rate=16000,
                                                               reference_sample_rate=11025)
        onnx_x = rt.OnnxExtractor(directory, level=level)
        onnx_out = onnx_x.extract(mixture, reference, sample_rate=16000, reference_sample_rate=11025)
        assert relative_error(onnx_out, torch_out) <= TOLERANCE
    # a list shares one reference; a prepared condition is the same as the reference
    condition = onnx_x.prepare_condition(reference, 11025)
    outs = onnx_x.extract([mixture, mixture[:9000]], condition, sample_rate=16000)
    assert np.array_equal(outs[0], onnx_out) and outs[1].shape == (9000,)
    assert not np.any(onnx_x.extract(np.zeros(4000, np.float32), condition, sample_rate=16000))


def test_mapping_output_and_batched_chunks(tmp_path):
    from usef.models import build_model

    torch.manual_seed(1)
    model = build_model("usef_conformer", preset="tiny", spectral_output="mapping").eval()
    directory = export_onnx(model, tmp_path / "mapping")
    mixture, reference = speechlike(1.2, seed=7), speechlike(0.9, seed=8)
    torch_out = api.Extractor(model).extract(mixture, reference, sample_rate=SR)
    onnx_x = rt.OnnxExtractor(directory)
    assert relative_error(onnx_x.extract(mixture, reference, sample_rate=SR), torch_out) <= TOLERANCE
    # one reference's keys/values (batch 1) serve a batch of mixture spectra
    condition = onnx_x.prepare_condition(reference, SR)
    specs = rt.stft(np.stack([mixture[:4000], mixture[4000:8000]]), onnx_x.n_fft, onnx_x.hop_length, onnx_x.window)
    batched = onnx_x._extract.run(None, {"mixture_spec": specs, **condition})[0]
    for i in range(2):
        alone = onnx_x._extract.run(None, {"mixture_spec": specs[i : i + 1], **condition})[0]
        assert relative_error(batched[i : i + 1], alone) < 1e-5


def test_runtime_errors(tiny_onnx, tmp_path):
    _, directory = tiny_onnx
    with pytest.raises(FileNotFoundError, match="not found"):
        rt.OnnxExtractor(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="lacks reference.onnx"):
        (tmp_path / "partial").mkdir()
        (tmp_path / "partial" / "config.json").write_text("{}")
        rt.OnnxExtractor(tmp_path / "partial")
    extractor = rt.OnnxExtractor(directory)
    mixture, reference = speechlike(1.0), speechlike(1.0, seed=3)
    with pytest.raises(ValueError, match="sample_rate"):
        extractor.extract(mixture, reference)
    with pytest.raises(ValueError, match="embedding"):
        extractor.extract(mixture, reference, sample_rate=SR, embedding=np.zeros(8))
    with pytest.raises(ValueError, match="too short"):
        extractor.extract(mixture, reference[:100], sample_rate=SR)
    with pytest.raises(ValueError, match="NaN"):
        extractor.extract(np.full(800, np.nan, np.float32), reference, sample_rate=SR)
    with pytest.raises(ValueError, match="chunk_seconds"):
        extractor.extract(mixture, reference, sample_rate=SR, chunk_seconds=0.1)
    with pytest.raises(FileNotFoundError, match="mixture"):
        extractor.extract(tmp_path / "nope.wav", reference, sample_rate=SR)


def test_bundled_8k_model_matches_torch(tmp_path):
    from usef import hub
    from usef.checkpoint import load_pretrained

    if "usef-conformer-8k" not in hub.list_models():
        pytest.skip("usef-conformer-8k is not bundled here")
    model = load_pretrained(hub.resolve_model("usef-conformer-8k"), device="cpu")
    directory = export_onnx(model, tmp_path / "8k", name="usef-conformer-8k")
    # 10 s in one chunk: long enough that a one-pass float32 reduction of the encoder's norm in
    # onnxruntime would be off by more than the tolerance (see usef.onnx_export._encode)
    mixture = speechlike(10.0, seed=1, f0=120.0) + speechlike(10.0, seed=2, f0=210.0)
    reference = speechlike(4.0, seed=3, f0=125.0)
    onnx_x = rt.OnnxExtractor(directory, threads=1)
    for chunk_seconds in (None, 4.0):
        torch_out = api.Extractor(model).extract(mixture, reference, sample_rate=SR, chunk_seconds=chunk_seconds)
        onnx_out = onnx_x.extract(mixture, reference, sample_rate=SR, chunk_seconds=chunk_seconds)
        assert relative_error(onnx_out, torch_out) <= TOLERANCE


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=180, check=False)


def test_runtime_and_cli_work_where_torch_cannot_be_imported(tiny_onnx, tmp_path):
    model, directory = tiny_onnx
    mixture = speechlike(2.3, seed=1) + speechlike(2.3, seed=2, f0=210.0)
    reference = speechlike(1.0, seed=3)
    sf.write(tmp_path / "mix.wav", mixture, SR, subtype="FLOAT")
    sf.write(tmp_path / "ref.wav", reference, SR, subtype="FLOAT")
    result = _python(f"""
        import sys
        sys.modules["torch"] = None  # `import torch` now raises ImportError
        import numpy as np
        from usef.onnx_runtime import OnnxExtractor
        from usef.bin.main import main
        out = OnnxExtractor({str(directory)!r}).extract("mix.wav", "ref.wav", chunk_seconds=1.0)
        np.save("api.npy", out)
        code = main(["extract", "--backend", "onnx", "--model", {str(directory)!r}, "mix.wav", "ref.wav",
                     "-o", "cli.wav", "--float", "--threads", "1"])
        assert sys.modules["torch"] is None
        sys.exit(code)
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    expected = api.Extractor(model).extract(mixture, reference, sample_rate=SR, chunk_seconds=1.0)
    assert relative_error(np.load(tmp_path / "api.npy"), expected) <= TOLERANCE
    whole = api.Extractor(model).extract(mixture, reference, sample_rate=SR)
    assert relative_error(sf.read(tmp_path / "cli.wav", dtype="float32")[0], whole) <= TOLERANCE


def test_cli_export_then_extract(tiny_model_dir, embedding_model_dir, tmp_path, monkeypatch, capsys):
    from usef.bin.main import main

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "onnx"
    assert main(["export", str(tiny_model_dir), "--onnx", str(out)]) == 0
    assert rt.is_onnx_dir(out)
    assert json.loads((out / "config.json").read_text())["model"] == tiny_model_dir.name
    sf.write("mix.wav", speechlike(1.5, seed=1) + speechlike(1.5, seed=2, f0=210.0), SR)
    sf.write("ref.wav", speechlike(1.0, seed=3), SR)
    Path("pairs.csv").write_text("id,mixture,reference\na,mix.wav,ref.wav\nb,missing.wav,ref.wav\n")
    assert main(["extract", "--backend", "onnx", "--model", str(out), "mix.wav", "ref.wav", "-o", "o.wav"]) == 0
    assert main(["extract", "--model", str(tiny_model_dir), "mix.wav", "ref.wav", "-o", "t.wav"]) == 0
    onnx_pcm, torch_pcm = sf.read("o.wav", dtype="int16")[0], sf.read("t.wav", dtype="int16")[0]
    assert np.abs(onnx_pcm.astype(int) - torch_pcm).max() <= 2  # 16-bit rounding
    # list mode: one good row, one failure
    assert main(["extract", "--backend", "onnx", "--model", str(out), "--list", "pairs.csv", "--out-dir", "list"]) == 1
    assert Path("list/a.wav").is_file() and "missing.wav" in Path("list/failures.csv").read_text()
    capsys.readouterr()
    # usage and configuration errors: exit 2 with a message
    for args in (["export", str(tiny_model_dir), "--onnx", str(out)],  # not empty, no --overwrite
                 ["export", str(embedding_model_dir), "--onnx", "emb"],  # not a usef_conformer
                 ["export", "nomodel", "--onnx", "x"],
                 ["extract", "--backend", "onnx", "mix.wav", "ref.wav", "-o", "d.wav"],  # --model default
                 ["extract", "--backend", "onnx", "--model", str(tmp_path), "mix.wav", "ref.wav", "-o", "e.wav"],
                 ["extract", "--backend", "onnx", "--model", str(out), "mix.wav", "--enrollment", "a.enroll",
                  "-o", "f.wav"]):
        assert main(args) == 2, args
        assert "error:" in capsys.readouterr().err
    assert not Path("emb").exists() and not Path("e.wav").exists()


def test_onnx_shifts_match_torch_and_follow_the_model_card(tiny_onnx, tmp_path):
    model, directory = tiny_onnx
    mixture = speechlike(2.1, seed=1, f0=120.0) + speechlike(2.1, seed=2, f0=210.0)
    reference = speechlike(1.3, seed=3, f0=125.0)
    for shifts in (1, 3):
        torch_out = api.Extractor(model, shifts=shifts).extract(mixture, reference, sample_rate=SR,
                                                                chunk_seconds=1.0)
        onnx_out = rt.OnnxExtractor(directory, threads=1, shifts=shifts).extract(mixture, reference, sample_rate=SR,
                                                                                 chunk_seconds=1.0)
        assert relative_error(onnx_out, torch_out) <= TOLERANCE
    assert rt.OnnxExtractor(directory).shifts == 1
    with pytest.raises(ValueError, match="shifts"):
        rt.OnnxExtractor(directory, shifts=0)
    # a model card's shifts travel into config.json and become the runtime's default
    carded = build_tiny()
    carded.inference_shifts = 2
    exported = export_onnx(carded, tmp_path / "carded", name="carded")
    assert rt.OnnxExtractor(exported).shifts == 2
