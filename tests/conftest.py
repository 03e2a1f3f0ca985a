"""Shared fixtures: tiny models saved with save_pretrained, synthetic speech-like signals."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

SR = 8000


def speechlike(seconds: float, sample_rate: int = SR, seed: int = 0, f0: float = 140.0) -> np.ndarray:
    """Harmonic tone (< 3.5 kHz) with a syllable-rate envelope and a little noise, float32 (T,)."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    pitch = f0 * (1.0 + 0.05 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    harmonics = sum(np.sin(k * phase) / k for k in range(1, 12) if k * f0 * 1.1 < 3500)
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 3.0 * t + rng.uniform(0, 6))
    wave = 0.2 * envelope * harmonics + 0.003 * rng.standard_normal(t.size)
    return wave.astype(np.float32)


def load_tool(name: str) -> ModuleType:
    """A script of ``tools/`` (not a package) imported as a module, for its functions."""
    path = Path(__file__).resolve().parents[1] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_tiny(name: str = "usef_conformer", seed: int = 0, identity: str = "") -> torch.nn.Module:
    """Tiny registered model with fixed weights.

    ``identity="exact"``: the mask head outputs exactly 1 + 0j, so the model returns its input
    (istft(stft(x))) whatever the context: chunked and whole runs must agree to float rounding.
    ``identity="near"``: mask 1 + a small context-dependent term, a deterministic model whose
    output stays close to its input but still depends on the chunking.
    """
    from usef.models import build_model

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model(name, preset="tiny")
    if identity:
        head = model.separator.output
        bins = model.separator.num_bins
        with torch.no_grad():
            head.weight.mul_(0.0 if identity == "exact" else 0.05)
            head.bias.zero_()
            head.bias[:bins] = 1.0
    return model.eval()


def _save(model: torch.nn.Module, directory: Path) -> Path:
    from usef.checkpoint import save_pretrained

    save_pretrained(model, directory)
    return directory


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random tiny usef_conformer (8 kHz) written by save_pretrained."""
    return _save(build_tiny(), tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def near_identity_model_dir(tmp_path_factory) -> Path:
    """Tiny usef_conformer whose output is close to its input (see :func:`build_tiny`)."""
    return _save(build_tiny(identity="near"), tmp_path_factory.mktemp("models") / "near_identity")


@pytest.fixture(scope="session")
def embedding_model_dir(tmp_path_factory) -> Path:
    """Tiny dvector_conformer conditioned on a pre-computed speaker vector."""
    return _save(build_tiny("dvector_conformer"), tmp_path_factory.mktemp("models") / "dvector")


@pytest.fixture
def signals() -> dict:
    """8 kHz mixture (2 s, two talkers), reference (1 s) and target."""
    target = speechlike(2.0, SR, seed=1, f0=120.0)
    other = speechlike(2.0, SR, seed=2, f0=210.0)
    reference = speechlike(1.0, SR, seed=3, f0=125.0)
    return {"mixture": target + other, "target": target, "reference": reference, "sample_rate": SR}


def extract_command(model_dir: Path, signals: dict, directory: Path) -> list[str]:
    """``usef extract`` arguments for the fixture's mixture and reference, written as WAVs into
    ``directory`` (add ``-o OUT`` and the options under test)."""
    import soundfile as sf

    sf.write(directory / "mix.wav", signals["mixture"], SR)
    sf.write(directory / "ref.wav", signals["reference"], SR)
    return ["extract", str(directory / "mix.wav"), str(directory / "ref.wav"), "--model", str(model_dir),
            "--float", "--device", "cpu"]


@pytest.fixture
def one_thread():
    # oversubscribed OpenMP threads make tiny CPU steps 10-100x slower on a busy 2-core box
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
