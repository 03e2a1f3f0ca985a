"""tools/measure_enrollment.py on synthetic speakers and tiny models (no corpus needed)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SR, build_tiny, load_tool, speechlike

from usef.data.dynamic_mix import DynamicMixDataset, SpeakerCorpus


@pytest.fixture(scope="module")
def tool():
    return load_tool("measure_enrollment")


def _dataset(tool) -> DynamicMixDataset:
    # a, b, c: one 12 s recording each (target and reference from disjoint parts); d: two short
    # recordings (its reference comes from the other one and is shorter than 6 s: skipped)
    corpus = SpeakerCorpus.from_arrays({
        "a": [speechlike(12.0, SR, seed=1, f0=110.0)],
        "b": [speechlike(12.0, SR, seed=2, f0=190.0)],
        "c": [speechlike(11.0, SR, seed=3, f0=150.0)],
        "d": [speechlike(4.5, SR, seed=4, f0=230.0), speechlike(5.0, SR, seed=5, f0=230.0)],
    }, SR)
    return DynamicMixDataset(corpus, None, segment_seconds=4.0, sir_range=(-5.0, 5.0),
                             reference_seconds=(tool.REFERENCE_SECONDS, tool.REFERENCE_SECONDS),
                             min_reference_seconds=tool.REFERENCE_SECONDS, interferer_probs=(1.0,))


def test_split_clips_are_consecutive_and_refuse_a_short_reference(tool):
    reference = np.arange(6 * SR, dtype=np.float32)
    clips = tool.split_clips(reference, SR, 3)
    assert [c.shape[0] for c in clips] == [2 * SR] * 3
    np.testing.assert_array_equal(np.concatenate(clips), reference)
    assert tool.split_clips(reference, SR, 1)[0][-1] == 2 * SR - 1
    with pytest.raises(ValueError, match="fewer than 4"):
        tool.split_clips(reference, SR, 4)


def test_padding_is_quiet_seeded_and_keeps_the_clip(tool):
    wave = speechlike(2.0, SR)
    padded = tool.pad_with_silence(wave, SR, 1.5, -60.0, np.random.default_rng(3))
    pad = round(1.5 * SR)
    assert padded.shape[0] == wave.shape[0] + 2 * pad and padded.dtype == np.float32
    np.testing.assert_array_equal(padded[pad:-pad], wave)
    rms = float(np.sqrt(np.mean(padded[:pad].astype(np.float64) ** 2)))
    assert 20 * np.log10(rms) == pytest.approx(-60.0, abs=0.5)
    again = tool.pad_with_silence(wave, SR, 1.5, -60.0, np.random.default_rng(3))
    np.testing.assert_array_equal(padded, again)


def test_condition_clips_differ_only_in_structure(tool):
    reference = speechlike(6.0, SR)

    def pad(wave):
        return tool.pad_with_silence(wave, SR, 1.5, -60.0, np.random.default_rng(0))

    shapes = {}
    for name in tool.CONDITIONS:
        clips, trim = tool.condition_clips(name, reference, SR, pad)
        shapes[name] = ([c.shape[0] / SR for c in clips], trim)
    assert shapes["A"] == ([6.0], False)
    assert shapes["B1"] == ([2.0], False)
    assert shapes["B2"] == ([2.0, 2.0], False)
    assert shapes["B3"] == ([2.0, 2.0, 2.0], False)
    assert shapes["A_trim"] == ([6.0], True)
    assert shapes["A_pad"] == ([9.0], False) and shapes["A_pad_trim"] == ([9.0], True)
    assert shapes["B1_pad"] == ([5.0], False) and shapes["B1_pad_trim"] == ([5.0], True)
    b3, _ = tool.condition_clips("B3", reference, SR, pad)
    np.testing.assert_array_equal(np.concatenate(b3), reference)  # B3 is A cut in three


def test_items_have_a_full_disjoint_reference_and_short_ones_are_counted(tool):
    dataset = _dataset(tool)
    items, counts = tool.make_items(dataset, 12, seed=7)
    assert counts["kept"] == len(items) == 12
    assert counts["drawn"] == 12 + counts["skipped_short_reference"]
    assert counts["skipped_short_reference"] > 0  # speaker d's references are < 6 s
    assert all(it["reference"].shape[0] == 6 * SR for it in items)
    assert all(it["mixture"].shape[0] == 4 * SR for it in items)
    assert {it["speaker"] for it in items} <= {"a", "b", "c"}
    again, _ = tool.make_items(dataset, 12, seed=7)  # seeded
    np.testing.assert_array_equal(items[5]["mixture"], again[5]["mixture"])
    with pytest.raises(RuntimeError, match="only"):
        tool.make_items(dataset, 5, seed=7, reference_seconds=20.0, max_draws=10)


def test_speaker_bootstrap_resamples_speakers(tool):
    low, high = tool.speaker_bootstrap([1.0, 1.0, 1.0], ["a", "b", "c"])
    assert low == high == 1.0
    values = [0.0] * 10 + [10.0]
    speakers = ["a"] * 10 + ["b"]
    low, high = tool.speaker_bootstrap(values, speakers, seed=1)
    assert low == 0.0 and high == 10.0  # one resample of only "b" gives 10, of only "a" 0


@pytest.mark.parametrize("name", ["usef_conformer", "embedding_conformer"])
def test_measure_and_tables_with_a_tiny_model(tool, name):
    from usef.api import Extractor

    extractor = Extractor(build_tiny(name), name=f"tiny-{name}")
    items, _ = tool.make_items(_dataset(tool), 2, seed=3)
    raw = tool.measure(extractor, items, list(tool.CONDITIONS), 1.5, -60.0, seed=3, log=lambda m: None)
    assert set(raw) == set(tool.CONDITIONS) and all(len(v) == 2 for v in raw.values())
    first = raw["A"][0]
    assert set(first) == {"si_sdri", "si_sdr_interferer", "confused", "failed", "enrolled_seconds"}
    assert first["enrolled_seconds"] == pytest.approx(6.0)
    assert raw["B3"][0]["enrolled_seconds"] == pytest.approx(6.0)
    assert raw["A_pad"][0]["enrolled_seconds"] == pytest.approx(9.0)
    assert raw["A_pad_trim"][0]["enrolled_seconds"] < 9.0  # the quiet padding is cut
    summary = tool.summarize_all(raw, [it["speaker"] for it in items])
    assert summary["conditions"]["A"]["si_sdri"]["n"] == 2
    assert {"B1-A", "B2-A", "B3-A", "A_pad_trim-A_pad", "A_pad_trim-A", "B1_pad_trim-B1"} <= set(
        summary["differences"])
    diff = summary["differences"]["B3-A"]
    assert diff["mean"] == pytest.approx(np.mean([b["si_sdri"] - a["si_sdri"] for a, b in zip(raw["A"], raw["B3"])]))
    table = tool.markdown({extractor.name: summary}, len(items))
    assert table.count("### Part") == 3
    assert table.count(f"| {extractor.name} |") == 12
