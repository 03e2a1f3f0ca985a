"""LibriMix enrollment lists in SpeakerBeam's format, and data checks that cover noise files."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from usef.data.librimix import (
    enrollment_list_format,
    metadata_path,
    read_enrollment_list,
    read_metadata,
)
from usef.data.librimix_dataset import Libri2MixTSE

SR = 8000
# Four test mixtures over three speakers; in SpeakerBeam's lists the enrollment of a
# target is the same speaker's source in another mixture of the split.
MIXES = [("1-10-0", "2-20-0"), ("2-20-1", "3-30-0"), ("3-30-1", "1-10-1"), ("1-10-2", "3-30-2")]


def _tone(seed: int, n: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def fake_test_split(root: Path, noisy: bool = False, listed: int = len(MIXES)) -> Path:
    """ROOT/wav8k/min/test/{mix_*,s1,s2[,noise]} for every mixture; the metadata lists only
    the first ``listed`` mixtures (as a trimmed metadata file would)."""
    base = root / "wav8k" / "min"
    (base / "metadata").mkdir(parents=True, exist_ok=True)
    mix_type = "mix_both" if noisy else "mix_clean"
    rows = []
    for r, (a, b) in enumerate(MIXES):
        mid = f"{a}_{b}"
        n = SR // 2 + 100 * r
        waves = {"s1": _tone(10 * r + 1, n), "s2": _tone(10 * r + 2, n)}
        if noisy:
            waves["noise"] = _tone(10 * r + 3, n)
        waves[mix_type] = sum(waves.values())
        rel = {}
        for folder, wave in waves.items():
            path = base / "test" / folder / f"{mid}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), wave, SR, subtype="FLOAT")
            rel[folder] = str(path.relative_to(root))
        row = {"mixture_ID": mid, "mixture_path": rel[mix_type], "source_1_path": rel["s1"],
               "source_2_path": rel["s2"]}
        if noisy:
            row["noise_path"] = rel["noise"]
        rows.append({**row, "length": n})
    with open(metadata_path(root, SR, "min", "test", mix_type), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[:listed])
    return root


# SpeakerBeam's map_mixture2enrollment layout: "mixture_ID target_utterance_ID sK/<mixture_ID>"
SPEAKERBEAM_MAP = """\
1-10-0_2-20-0 1-10-0 s2/3-30-1_1-10-1
1-10-0_2-20-0 2-20-0 s1/2-20-1_3-30-0
2-20-1_3-30-0 2-20-1 s2/1-10-0_2-20-0
2-20-1_3-30-0 3-30-0 s2/1-10-2_3-30-2
3-30-1_1-10-1 3-30-1 s1/2-20-1_3-30-0
3-30-1_1-10-1 1-10-1 s1/1-10-2_3-30-2

1-10-2_3-30-2 1-10-2 s1/1-10-0_2-20-0
1-10-2_3-30-2 3-30-2 s2/2-20-1_3-30-0
"""
EXPECTED = {  # (mixture, target index) -> enrollment file relative to the split folder
    ("1-10-0_2-20-0", 0): "s2/3-30-1_1-10-1.wav", ("1-10-0_2-20-0", 1): "s1/2-20-1_3-30-0.wav",
    ("2-20-1_3-30-0", 0): "s2/1-10-0_2-20-0.wav", ("2-20-1_3-30-0", 1): "s2/1-10-2_3-30-2.wav",
    ("3-30-1_1-10-1", 0): "s1/2-20-1_3-30-0.wav", ("3-30-1_1-10-1", 1): "s1/1-10-2_3-30-2.wav",
    ("1-10-2_3-30-2", 0): "s1/1-10-0_2-20-0.wav", ("1-10-2_3-30-2", 1): "s2/2-20-1_3-30-0.wav",
}


def _map(tmp_path: Path, text: str = SPEAKERBEAM_MAP) -> Path:
    path = tmp_path / "speakerbeam" / "map_mixture2enrollment"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_speakerbeam_map_is_read_as_published(tmp_path):
    root = fake_test_split(tmp_path / "Libri2Mix")
    split = (root / "wav8k" / "min" / "test").resolve()
    enrollment = _map(tmp_path)
    assert enrollment_list_format(enrollment) == "speakerbeam"
    ds = Libri2MixTSE(root, split="test", sample_rate=SR, enrollment=enrollment)
    assert ds.enrollment_source == "speakerbeam" and ds.enrollment_path == enrollment
    assert ds._enrollment == {key: split / rel for key, rel in EXPECTED.items()}
    assert enrollment.read_text() == SPEAKERBEAM_MAP  # read as-is, never rewritten
    # the item's reference is that file's audio, whole (no reference crop)
    item = ds[2]  # mixture 1, target 0 -> s2 of mixture 0
    expected, _ = sf.read(str(split / "s2" / "1-10-0_2-20-0.wav"), dtype="float32")
    np.testing.assert_array_equal(item["reference"], expected)
    assert item["mixture_id"] == "2-20-1_3-30-0" and item["speaker"] == "2"
    assert ds.missing_files() == []


def test_speakerbeam_map_through_the_eval_reader(tmp_path):
    """usef eval's path: read_enrollment_list(path, rows=) yields absolute reference paths."""
    root = fake_test_split(tmp_path / "Libri2Mix").resolve()
    rows = read_metadata(metadata_path(root, SR, "min", "test"), root)
    entries = read_enrollment_list(_map(tmp_path), rows=rows)
    split = root / "wav8k" / "min" / "test"
    assert {(e.mixture_id, e.target_index): Path(e.reference_path) for e in entries} == {
        key: split / rel for key, rel in EXPECTED.items()}
    # without the metadata the ids cannot become files: a clear error, not a column complaint
    with pytest.raises(ValueError, match="SpeakerBeam's map_mixture2enrollment.*rows="):
        read_enrollment_list(_map(tmp_path))


def test_speakerbeam_enrollment_outside_trimmed_metadata_is_found_in_the_split_folder(tmp_path):
    root = fake_test_split(tmp_path / "Libri2Mix", listed=2)  # mixtures 2 and 3 not listed
    split = (root / "wav8k" / "min" / "test").resolve()
    ds = Libri2MixTSE(root, split="test", sample_rate=SR, enrollment=_map(tmp_path))
    assert len(ds) == 4
    assert ds._enrollment == {key: split / rel for key, rel in EXPECTED.items() if key[0] in
                              ("1-10-0_2-20-0", "2-20-1_3-30-0")}
    assert ds._enrollment[("1-10-0_2-20-0", 0)] == split / "s2" / "3-30-1_1-10-1.wav"  # unlisted mixture


def test_speakerbeam_enrollment_that_matches_no_file_is_named(tmp_path):
    root = fake_test_split(tmp_path / "Libri2Mix", listed=2)
    (root / "wav8k" / "min" / "test" / "s2" / "3-30-1_1-10-1.wav").unlink()
    with pytest.raises(ValueError, match=r"1 enrollment ids match no file, e\.g\. s2/3-30-1_1-10-1 "
                                         r"\(line 1, mixture 1-10-0_2-20-0, target 1-10-0\)"):
        Libri2MixTSE(root, split="test", sample_rate=SR, enrollment=_map(tmp_path))
    # an utterance id that no listed mixture holds: no LibriSpeech root to look it up in
    bad = SPEAKERBEAM_MAP.replace("s2/3-30-1_1-10-1", "1-10-7", 1)
    with pytest.raises(ValueError, match="1-10-7 .line 1"):
        Libri2MixTSE(root, split="test", sample_rate=SR, enrollment=_map(tmp_path, bad))


def test_speakerbeam_map_errors(tmp_path):
    root = fake_test_split(tmp_path / "Libri2Mix")
    # a bare utterance id held by a listed mixture is accepted
    bare = SPEAKERBEAM_MAP.replace("s2/3-30-1_1-10-1", "1-10-1", 1)
    ds = Libri2MixTSE(root, split="test", sample_rate=SR, enrollment=_map(tmp_path, bare))
    assert ds._enrollment[("1-10-0_2-20-0", 0)].name == "3-30-1_1-10-1.wav"
    wrong_target = SPEAKERBEAM_MAP.replace("1-10-0_2-20-0 2-20-0", "1-10-0_2-20-0 2-20-9")
    with pytest.raises(ValueError, match=":2: target utterance 2-20-9 is not part of mixture 1-10-0_2-20-0"):
        Libri2MixTSE(root, split="test", sample_rate=SR, enrollment=_map(tmp_path, wrong_target))
    other_split = "9-90-0_8-80-0 9-90-0 s1/9-90-1_8-80-1\n"
    with pytest.raises(ValueError, match="none of its 1 lines.*this split"):
        Libri2MixTSE(root, split="test", sample_rate=SR, enrollment=_map(tmp_path, other_split))
    short = "\n".join(SPEAKERBEAM_MAP.splitlines()[:6]) + "\n"  # last mixture missing
    with pytest.raises(ValueError, match="no reference for 2 targets"):
        Libri2MixTSE(root, split="test", sample_rate=SR, enrollment=_map(tmp_path, short))
    junk = tmp_path / "junk.txt"
    junk.write_text("mixture;target\n")
    with pytest.raises(ValueError, match="neither usef's CSV.*nor SpeakerBeam's"):
        Libri2MixTSE(root, split="test", sample_rate=SR, enrollment=junk)


def test_seeded_usef_list_is_still_made_and_recorded(tmp_path):
    root = fake_test_split(tmp_path / "Libri2Mix")
    listed = tmp_path / "test_enrollment.csv"
    ds = Libri2MixTSE(root, split="test", sample_rate=SR, enrollment=listed, seed=3)
    assert ds.enrollment_source == "usef" and enrollment_list_format(listed) == "usef"
    again = Libri2MixTSE(root, split="test", sample_rate=SR, enrollment=listed, seed=99)
    assert again.enrollment_source == "usef" and again._enrollment == ds._enrollment
    assert Libri2MixTSE(root, split="test", sample_rate=SR).enrollment_source == "random"


def test_noise_files_are_part_of_the_data_check(tmp_path):
    root = fake_test_split(tmp_path / "Libri2Mix", noisy=True)
    noise = (root / "wav8k" / "min" / "test" / "noise" / "2-20-1_3-30-0.wav").resolve()
    ds = Libri2MixTSE(root, split="test", sample_rate=SR, mixture_type="mix_both")
    row = ds.rows[1]
    assert row.all_paths() == (row.mixture_path, *row.sources, noise)
    assert ds.rows[0].all_paths()[-1].parent.name == "noise"
    assert ds.missing_files() == []
    noise.unlink()
    assert ds.missing_files() == [noise]
    # decoding the row names the file, its role and the metadata instead of a bare decoder error
    with pytest.raises(FileNotFoundError, match=r"noise file of mixture 2-20-1_3-30-0 listed in .*"
                                                r"mixture_test_mix_both\.csv does not exist: .*2-20-1_3-30-0\.wav"):
        ds[2]
    clean = fake_test_split(tmp_path / "clean")
    row = Libri2MixTSE(clean, split="test", sample_rate=SR).rows[0]
    assert row.all_paths() == (row.mixture_path, *row.sources)
