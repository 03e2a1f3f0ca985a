"""tools/make_tts_speakers.py without the TTS engines: voice files and a manifest make_pack reads."""

from __future__ import annotations

import random

import numpy as np
import pytest
from conftest import load_tool

from usef.data.pack import SpeakerCorpus


@pytest.fixture(scope="module")
def tool():
    return load_tool("make_tts_speakers")


def _fake_espeak_data(root):
    (root / "voices" / "!v").mkdir(parents=True)
    return root


def test_espeak_variants_are_seeded_and_in_range(tool, tmp_path):
    first = _fake_espeak_data(tmp_path / "a")
    second = _fake_espeak_data(tmp_path / "b")
    rates = [tool.espeak_variant(d, "v0", random.Random(5)) for d in (first, second)]
    text = (first / "voices" / "!v" / "v0").read_text()
    assert rates[0] == rates[1] and 145 <= rates[0] <= 190
    assert text == (second / "voices" / "!v" / "v0").read_text()
    lines = text.splitlines()
    low, high = (int(x) for x in next(line for line in lines if line.startswith("pitch")).split()[1:])
    assert 70 <= low < high <= 215 * 1.7
    assert sum(line.startswith("formant ") for line in lines) == 9
    other = _fake_espeak_data(tmp_path / "c")
    tool.espeak_variant(other, "v0", random.Random(6))
    assert (other / "voices" / "!v" / "v0").read_text() != text


def test_main_writes_a_manifest_that_the_pack_reader_takes(tool, tmp_path, monkeypatch):
    data = _fake_espeak_data(tmp_path / "espeak-ng-data")
    monkeypatch.setattr(tool, "ESPEAK_DATA", data)
    monkeypatch.setattr(tool, "kjv_sentences", lambda: ["In the beginning was the word.", "And it was so."])
    monkeypatch.setattr(tool, "_voice_works", lambda engine, voice, work, root: engine == "flite")

    def fake_synthesize(engine, voice, text, work, root, rate=175):
        assert (root / "espeak-ng-data" / "voices" / "!v").is_dir()  # the private copy
        return np.sin(np.arange(tool.SAMPLE_RATE) * 0.05).astype(np.float32) * 0.1 * len(text) / 10

    monkeypatch.setattr(tool, "synthesize", fake_synthesize)
    out = tmp_path / "tts"
    assert tool.main(["--out", str(out), "--espeak", "3", "--sentences", "2"]) == 0
    flite = [b for b in tool.BASES if b[0] == "flite"]
    corpus = SpeakerCorpus.from_manifest(out / "manifest.csv", 8000)
    assert len(corpus.speakers) == 3 + len(flite)
    assert all(s.startswith("tts:") for s in corpus.speakers)
    assert all(corpus.num_utterances(s) == 2 for s in corpus.speakers)
    clip = corpus.load(corpus.speakers[0], 0)
    assert len(clip) == 8000 and np.max(np.abs(clip)) == pytest.approx(0.5, abs=0.01)  # peak-normalised


def test_no_talker_is_an_error_not_an_empty_manifest(tool, tmp_path, monkeypatch):
    monkeypatch.setattr(tool, "ESPEAK_DATA", _fake_espeak_data(tmp_path / "espeak-ng-data"))
    monkeypatch.setattr(tool, "kjv_sentences", lambda: ["In the beginning was the word."])
    monkeypatch.setattr(tool, "_voice_works", lambda *args: False)
    assert tool.main(["--out", str(tmp_path / "tts"), "--espeak", "0"]) == 1
    assert not (tmp_path / "tts" / "manifest.csv").exists()
