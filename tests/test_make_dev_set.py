"""tools/make_dev_set.py: the held-out sets, clean by default, with noise at the asked SNR or rooms."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import SR, load_tool, speechlike


@pytest.fixture(scope="module")
def tool():
    return load_tool("make_dev_set")


@pytest.fixture()
def corpus(tmp_path) -> dict[str, Path]:
    """Four talkers of one 8 s recording each, two noise clips, and the list of held-out talkers."""
    speech_rows, noise_rows = ["path,speaker"], ["path,category"]
    for k, f0 in enumerate((110.0, 140.0, 190.0, 230.0)):
        sf.write(tmp_path / f"s{k}.flac", 0.3 * speechlike(8.0, seed=k, f0=f0), SR)
        speech_rows.append(f"s{k}.flac,spk{k}")
    rng = np.random.default_rng(5)
    for k in range(2):
        sf.write(tmp_path / f"n{k}.flac", (0.1 * rng.standard_normal(6 * SR)).astype(np.float32), SR)
        noise_rows.append(f"n{k}.flac,hiss")
    (tmp_path / "speech.csv").write_text("\n".join(speech_rows) + "\n", encoding="utf-8")
    (tmp_path / "noise.csv").write_text("\n".join(noise_rows) + "\n", encoding="utf-8")
    (tmp_path / "held_out.txt").write_text("spk0\nspk1\nspk2\nspk3\n", encoding="utf-8")
    return {"speech": tmp_path / "speech.csv", "noise": tmp_path / "noise.csv",
            "speakers": tmp_path / "held_out.txt"}


def _residual_to_speech_db(tool, corpus, out: Path, *extra: str) -> list[float]:
    """Per item: (mixture - target - interferer) against (target + interferer), dB."""
    assert tool.main(["--speech", str(corpus["speech"]), "--speakers", str(corpus["speakers"]),
                      "--n", "6", "--segment-seconds", "2", "--reference-seconds", "1", "1.5",
                      "--out", str(out), *extra]) == 0
    ratios = []
    with open(out / "eval.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            mixture, target, interferer = (sf.read(out / row[key], dtype="float64")[0]
                                           for key in ("mixture", "target", "interferer"))
            speech = target + interferer
            rest = mixture - speech
            ratios.append(10 * np.log10(np.sum(rest**2) / np.sum(speech**2) + 1e-12))
    return ratios


def test_clean_by_default_noise_at_the_asked_snr_and_rooms(tool, corpus, tmp_path):
    clean = _residual_to_speech_db(tool, corpus, tmp_path / "clean")
    assert max(clean) < -60.0  # only the 16-bit rounding

    noisy = _residual_to_speech_db(tool, corpus, tmp_path / "noisy", "--noise", str(corpus["noise"]),
                                   "--snr", "5", "5")
    np.testing.assert_allclose(noisy, -5.0, atol=0.05)  # every item, at exactly the asked SNR

    rooms = _residual_to_speech_db(tool, corpus, tmp_path / "rooms", "--p-reverb", "1")
    # the mixture holds the reverberant talkers, the target only their direct path and early part
    assert all(-30.0 < db < -5.0 for db in rooms)


def _column(folder: Path, key: str) -> list[np.ndarray]:
    with open(folder / "eval.csv", newline="", encoding="utf-8") as handle:
        return [sf.read(folder / row[key], dtype="float64")[0] for row in csv.DictReader(handle)]


def test_without_writes_the_same_items_with_a_part_taken_away(tool, corpus, tmp_path):
    noise = ["--noise", str(corpus["noise"]), "--snr", "0", "10"]
    _residual_to_speech_db(tool, corpus, tmp_path / "noisy", *noise)
    quiet = _residual_to_speech_db(tool, corpus, tmp_path / "quiet", *noise, "--without", "noise")
    assert max(quiet) < -60.0
    for noisy_target, quiet_target in zip(_column(tmp_path / "noisy", "target"), _column(tmp_path / "quiet", "target")):
        assert np.corrcoef(noisy_target, quiet_target)[0, 1] > 0.9999  # the same talker, crop and SIR
    for a, b in zip(_column(tmp_path / "noisy", "reference"), _column(tmp_path / "quiet", "reference")):
        np.testing.assert_array_equal(a, b)

    dry = _residual_to_speech_db(tool, corpus, tmp_path / "dry", "--p-reverb", "1", "--without", "mixture-room")
    assert max(dry) < -60.0
