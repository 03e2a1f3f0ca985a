"""`usef enroll` and `usef extract --enrollment` end to end (in-process, tmp_path, tiny models)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import SR, build_tiny, speechlike

import usef
from usef.bin.main import main as usef_main
from usef.enrollment import Enrollment


@pytest.fixture
def audio(tmp_path) -> Path:
    folder = tmp_path / "audio"
    folder.mkdir()
    silence = np.zeros(SR // 2, np.float32)
    sf.write(folder / "alice1.wav", np.concatenate([silence, speechlike(1.0, SR, seed=3), silence]), SR)
    sf.write(folder / "alice2.wav", speechlike(1.2, 16000, seed=4), 16000)  # any rate
    sf.write(folder / "mix.wav", speechlike(1.5, SR, seed=1) + speechlike(1.5, SR, seed=2, f0=210.0), SR)
    sf.write(folder / "mix2.wav", speechlike(1.0, SR, seed=5) + speechlike(1.0, SR, seed=6, f0=200.0), SR)
    return folder


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory) -> Path:
    from usef.checkpoint import save_pretrained

    directory = tmp_path_factory.mktemp("models") / "other"
    save_pretrained(build_tiny(seed=1), directory)
    return directory


def test_enroll_then_extract(audio, tmp_path, tiny_model_dir, capsys):
    enroll_file = tmp_path / "alice.enroll"
    code = usef_main(["enroll", str(audio / "alice1.wav"), str(audio / "alice2.wav"), "-o", str(enroll_file),
                      "--model", str(tiny_model_dir), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    enrollment = Enrollment.load(enroll_file)
    assert enrollment.num_clips == 2 and enrollment.model_name == "tiny"
    assert enrollment.clip_seconds[0] == pytest.approx(1.0 + 2 * 0.1, abs=0.05)  # silence trimmed

    out = tmp_path / "alice.wav"
    code = usef_main(["extract", str(audio / "mix.wav"), "--enrollment", str(enroll_file), "-o", str(out),
                      "--model", str(tiny_model_dir), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    extractor = usef.load_model(tiny_model_dir, device="cpu")
    expected = extractor.extract(str(audio / "mix.wav"), enrollment)
    written, rate = sf.read(out, dtype="float32")
    assert rate == SR and written.shape == expected.shape
    np.testing.assert_allclose(written, expected, atol=1.0 / 2**15)  # 16-bit PCM

    # an existing output needs --overwrite (exit 2); so does enrolling over a file
    assert usef_main(["enroll", str(audio / "alice1.wav"), "-o", str(enroll_file), "--model",
                      str(tiny_model_dir)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_other_model_and_bad_files_refused(audio, tmp_path, tiny_model_dir, other_model_dir, capsys):
    enroll_file = tmp_path / "alice.enroll"
    assert usef_main(["enroll", str(audio / "alice1.wav"), "-o", str(enroll_file),
                      "--model", str(tiny_model_dir), "--device", "cpu"]) == 0
    code = usef_main(["extract", str(audio / "mix.wav"), "--enrollment", str(enroll_file),
                      "-o", str(tmp_path / "x.wav"), "--model", str(other_model_dir), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "made for model 'tiny'" in err
    assert not (tmp_path / "x.wav").exists()

    junk = tmp_path / "junk.enroll"
    junk.write_bytes(b"nothing useful")
    for bad in (junk, tmp_path / "missing.enroll"):
        code = usef_main(["extract", str(audio / "mix.wav"), "--enrollment", str(bad), "-o", str(tmp_path / "y.wav"),
                          "--model", str(tiny_model_dir)])
        assert code == 2
    # a reference and an enrollment at once is a usage error
    assert usef_main(["extract", str(audio / "mix.wav"), str(audio / "alice1.wav"), "--enrollment",
                      str(enroll_file), "-o", str(tmp_path / "z.wav"), "--model", str(tiny_model_dir)]) == 2
    # a clip that cannot be used: exit 1
    short = audio / "short.wav"
    sf.write(short, speechlike(0.1, SR), SR)
    assert usef_main(["enroll", str(short), "-o", str(tmp_path / "s.enroll"), "--model", str(tiny_model_dir)]) == 1
    assert "too short" in capsys.readouterr().err


def test_list_with_enrollment_column(audio, tmp_path, tiny_model_dir, other_model_dir, capsys):
    alice = tmp_path / "alice.enroll"
    assert usef_main(["enroll", str(audio / "alice1.wav"), str(audio / "alice2.wav"), "-o", str(alice),
                      "--model", str(tiny_model_dir), "--device", "cpu"]) == 0
    stranger = tmp_path / "stranger.enroll"
    usef.load_model(other_model_dir, device="cpu").enroll(str(audio / "alice1.wav")).save(stranger)
    rows = [
        {"id": "a", "mixture": "audio/mix.wav", "reference": "", "enrollment": "alice.enroll"},
        {"id": "b", "mixture": "audio/mix2.wav", "reference": "", "enrollment": "alice.enroll"},
        {"id": "c", "mixture": "audio/mix2.wav", "reference": "audio/alice1.wav", "enrollment": ""},
        {"id": "d", "mixture": "audio/mix.wav", "reference": "", "enrollment": "stranger.enroll"},
        {"id": "e", "mixture": "audio/mix.wav", "reference": "", "enrollment": "missing.enroll"},
    ]
    listing = tmp_path / "pairs.csv"
    with open(listing, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "mixture", "reference", "enrollment"])
        writer.writeheader()
        writer.writerows(rows)
    out_dir = tmp_path / "out"
    code = usef_main(["extract", "--list", str(listing), "--out-dir", str(out_dir), "--model", str(tiny_model_dir),
                      "--device", "cpu", "--jobs", "1"])
    assert code == 1  # d and e failed, the others are written
    assert sorted(p.name for p in out_dir.glob("*.wav")) == ["a.wav", "b.wav", "c.wav"]
    with open(out_dir / "failures.csv", newline="") as handle:
        failures = {row["id"]: row["error"] for row in csv.DictReader(handle)}
    assert set(failures) == {"d", "e"}
    assert "made for model 'other'" in failures["d"] and "not found" in failures["e"]

    enrollment = Enrollment.load(alice)
    expected = usef.load_model(tiny_model_dir, device="cpu").extract(str(audio / "mix2.wav"), enrollment)
    np.testing.assert_allclose(sf.read(out_dir / "b.wav", dtype="float32")[0], expected, atol=1.0 / 2**15)
