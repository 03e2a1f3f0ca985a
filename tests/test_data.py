"""Tests for usef.data: dynamic mixing, LibriMix reader, packs, splits and collation.

All audio is synthetic and written under tmp_path; nothing reads /work/shared.
"""

from __future__ import annotations

import csv
import sys
import zlib

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from usef.data import (
    DynamicMixDataset,
    Libri2MixTSE,
    NoiseCorpus,
    SpeakerCorpus,
    collate_examples,
    make_fixed_examples,
    metadata_path,
    mulaw_decode,
    mulaw_encode,
    read_enrollment_list,
    read_pack,
    spanning_dev_speakers,
    speaker_disjoint_split,
    speed_perturb,
    synthetic_rir,
    write_eval_set,
    write_pack,
)

SR = 8000


def _speech(seconds: float, seed: int) -> np.ndarray:
    """Noise with a slow random envelope: speech-like level changes, unique per seed."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    env = np.repeat(rng.uniform(0.05, 0.5, n // 400 + 1), 400)[:n]
    return (rng.standard_normal(n) * env * 0.3).astype(np.float32)


def _corpus() -> SpeakerCorpus:
    return SpeakerCorpus.from_arrays({
        "ls:1": [_speech(10.0, 1)],            # single recordings
        "ls:2": [_speech(12.0, 2)],
        "ls:short": [_speech(3.5, 3)],         # too short for 3 s + 2 s: reference shrinks to 1 s
        "vctk:3": [_speech(4.0, 4), _speech(5.0, 5), _speech(2.5, 6)],
        "vctk:4": [_speech(6.0, 7), _speech(4.5, 8)],
    }, SR)


def _noise() -> NoiseCorpus:
    return NoiseCorpus.from_arrays([_speech(5.0, 20), _speech(1.0, 21)], SR, ["rain", "tick"])


def _power(x: np.ndarray) -> float:
    return float(np.mean(np.asarray(x, dtype=np.float64) ** 2))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        np.array_equal(a[k], b[k]) if isinstance(a[k], np.ndarray) else a[k] == b[k] for k in a)


# -- dynamic mixing ----------------------------------------------------------------


def test_mixture_is_the_sum_of_its_parts_and_levels_follow_the_plan():
    ds = DynamicMixDataset(_corpus(), _noise(), interferer_probs=(0.5, 0.5), p_noise=0.5, seed=7)
    n_two = n_noise = 0
    for i in range(24):
        ex, plan = ds[i], ds.plan(i)
        assert ex["mixture"].shape == ex["target"].shape == ex["interferer"].shape == (3 * SR,)
        np.testing.assert_allclose(ex["mixture"], ex["target"] + ex["interferer"] + ex["noise"], atol=1e-5)
        sir = 10 * np.log10(_power(ex["target"]) / _power(ex["interferer"]))
        assert -5.0 - 1e-3 <= sir <= 5.0 + 1e-3 and sir == pytest.approx(plan.sir_db, abs=1e-3)
        if plan.noise is not None:
            n_noise += 1
            snr = 10 * np.log10(_power(ex["target"] + ex["interferer"]) / _power(ex["noise"]))
            assert snr == pytest.approx(plan.noise[2], abs=1e-3)
        else:
            assert not ex["noise"].any()
        n_two += len(plan.interferers) == 2
        assert ex["speaker"] not in {c.speaker for c in plan.interferers}
        peak = np.max(np.abs(ex["mixture"]))
        rms_db = 10 * np.log10(_power(ex["mixture"]))
        assert peak <= 0.99 + 1e-6
        assert -25.0 - 1e-3 <= rms_db <= -5.0 + 1e-3
        if peak < 0.99 - 1e-4:  # not peak-limited: the drawn gain is exact
            assert rms_db == pytest.approx(plan.gain_dbfs, abs=1e-3)
    assert 0 < n_two < 24 and 0 < n_noise < 24


def test_sir_range_can_be_changed_for_a_curriculum():
    ds = DynamicMixDataset(_corpus(), seed=1)
    ds.sir_range = (10.0, 10.0)
    ex = ds[3]
    assert 10 * np.log10(_power(ex["target"]) / _power(ex["interferer"])) == pytest.approx(10.0, abs=1e-3)
    with pytest.raises(ValueError, match="sir_range"):
        ds.sir_range = (5.0, -5.0)


def test_reference_never_overlaps_the_target():
    corpus = _corpus()
    ds = DynamicMixDataset(corpus, p_speed=0.5, seed=11)
    singles = multi = 0
    for i in range(80):
        plan, ex = ds.plan(i), ds[i]
        t, r = plan.target, plan.reference
        assert t.speaker == r.speaker == ex["speaker"] and t.factor == r.factor
        if corpus.num_utterances(t.speaker) == 1:
            singles += 1
            assert t.utterance == r.utterance
            assert t.stop <= r.start or r.stop <= t.start  # disjoint sample ranges
            assert r.stop - r.start >= round(1.0 * SR * r.factor) - 1  # never below 1 s
        else:
            multi += 1
            assert t.utterance != r.utterance
        assert 0.95 * SR <= len(ex["reference"]) <= 4.0 * SR + 2
        if t.factor == 1.0:  # the rendered reference is exactly the planned span, rescaled
            src = corpus.load(r.speaker, r.utterance)[r.start : r.stop].astype(np.float64)
            corr = np.dot(src, ex["reference"]) / np.linalg.norm(src) / np.linalg.norm(ex["reference"])
            assert corr > 0.9999
    assert singles > 10 and multi > 10


def test_short_single_recording_shrinks_reference_to_one_second():
    corpus = SpeakerCorpus.from_arrays({"a": [_speech(3.5, 1)], "b": [_speech(8.0, 2)]}, SR)
    ds = DynamicMixDataset(corpus.subset(["a", "b"]), seed=0)
    plans = [ds.plan(i) for i in range(30)]
    short = [p for p in plans if p.target.speaker == "a"]
    assert short
    for p in short:
        assert p.reference.stop - p.reference.start == SR  # exactly the 1 s minimum
        assert p.target.stop - p.target.start == int(2.5 * SR)  # target shrinks, then zero-padded
        assert p.target.stop <= p.reference.start or p.reference.stop <= p.target.start
    too_short = SpeakerCorpus.from_arrays({"a": [_speech(1.5, 1)], "b": [_speech(1.5, 2)]}, SR)
    with pytest.raises(ValueError, match="no speaker"):
        DynamicMixDataset(too_short)[0]


def test_same_seed_reproduces_and_resumes_out_of_order():
    a = DynamicMixDataset(_corpus(), _noise(), p_speed=0.5, p_reverb=0.5, seed=5)
    b = DynamicMixDataset(_corpus(), _noise(), p_speed=0.5, p_reverb=0.5, seed=5)
    forward = [a[i] for i in range(6)]
    for i in [5, 2, 4, 0, 3, 1]:  # resume: any example regenerated alone, in any order
        assert _same(b[i], forward[i])
    assert not _same(a[0], a[1])
    assert not _same(a.with_config(seed=6)[0], forward[0])
    assert not _same(a.with_config(rank=1)[0], forward[0])  # DDP ranks draw different streams
    assert not _same(a.with_config(epoch=1)[0], forward[0])


def test_reference_length_group_gives_each_batch_one_unpadded_reference_length():
    corpus = SpeakerCorpus.from_arrays({f"s{i}": [_speech(12.0, 30 + i), _speech(9.0, 40 + i)] for i in range(6)}, SR)
    corpus = SpeakerCorpus.merge(corpus, SpeakerCorpus.from_arrays({"one": [_speech(12.0, 50)]}, SR))
    common = {"p_speed": 1.0, "speed_range": (0.85, 1.15), "p_reverb": 0.5, "p_reference_eq": 0.5, "seed": 9}
    plain = DynamicMixDataset(corpus, **common)
    grouped = plain.with_config(reference_length_group=4)
    lengths = []
    for batch in range(6):
        items = [grouped[i] for i in range(4 * batch, 4 * batch + 4)]
        sizes = {len(x["reference"]) for x in items}
        assert len(sizes) == 1, sizes  # speed perturbation's rounding included: no padding
        assert 2.0 * SR <= sizes.pop() <= 4.0 * SR
        collated = collate_examples(items)
        assert bool((collated["reference_lengths"] == collated["reference"].shape[1]).all())
        lengths.append(len(items[0]["reference"]))
        for i in range(4 * batch, 4 * batch + 4):  # every other choice is the ungrouped one
            a, b = plain.plan(i), grouped.plan(i)
            assert (a.target.speaker, a.target.factor, a.interferers, a.sir_db, a.noise, a.rt60) == (
                b.target.speaker, b.target.factor, b.interferers, b.sir_db, b.noise, b.rt60)
            if a.target.speaker != "one":  # one recording: the target's region moves with the reference's
                assert np.array_equal(plain[i]["mixture"], grouped[i]["mixture"])
    assert len(set(lengths)) == 6  # a fresh length per group
    assert plain.plan(0).reference_samples is None
    with pytest.raises(ValueError, match="reference_length_group"):
        DynamicMixDataset(corpus, reference_length_group=0)


def test_reference_length_group_batch_follows_the_trainer_batch_and_spares_the_dev_set():
    from usef.train.data import _mix_config
    assert _mix_config({"reference_length_group": "batch", "sir_range": [-5, 5]}, 16) == {
        "reference_length_group": 16, "sir_range": (-5, 5)}
    assert _mix_config({"reference_length_group": 3}, 16)["reference_length_group"] == 3


def test_dataloader_workers_resume_and_do_not_repeat():
    ds = DynamicMixDataset(_corpus(), seed=2, segment_seconds=1.0, reference_seconds=(1.0, 2.0))
    loader = DataLoader(ds, batch_size=2, sampler=range(4, 10), num_workers=2, collate_fn=collate_examples)
    mixtures = torch.cat([batch["mixture"] for batch in loader])
    expected = torch.stack([torch.from_numpy(ds[i]["mixture"]) for i in range(4, 10)])
    assert torch.equal(mixtures, expected)  # worker-independent: exact resume at index 4
    assert len({m.numpy().tobytes() for m in mixtures}) == 6


def test_speed_perturb_moves_frequency_and_keeps_level():
    t = np.arange(2 * SR) / SR
    x = np.sin(2 * np.pi * 500.0 * t)
    for factor in (0.9, 1.1):
        y = speed_perturb(x, factor)
        assert len(y) == round(len(x) / factor)
        spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
        assert np.argmax(spectrum) * SR / len(y) == pytest.approx(500.0 * factor, abs=2.0)
        assert np.sqrt(np.mean(y[500:-500] ** 2)) == pytest.approx(np.sqrt(0.5), rel=0.02)


def test_synthetic_rir_and_reverberant_mix():
    rir = synthetic_rir(np.random.default_rng(0), 0.4, SR, drr_db=6.0)
    assert rir[0] == 1.0 and len(rir) == int(0.4 * SR)
    assert np.sum(rir[1:] ** 2) == pytest.approx(10 ** -0.6, rel=1e-6)
    assert np.sum(rir[1:320] ** 2) > 100 * np.sum(rir[-320:] ** 2)  # decays ~60 dB
    ds = DynamicMixDataset(_corpus(), p_reverb=1.0, seed=3)
    ex = ds[0]
    late = ex["mixture"] - ex["target"] - ex["interferer"] - ex["noise"]
    assert 0 < _power(late) < _power(ex["target"])  # the target's late tail stays in the mixture
    sir = 10 * np.log10(_power(ex["target"]) / _power(ex["interferer"]))
    assert sir == pytest.approx(ds.plan(0).sir_db, abs=1e-3)


def test_fixed_examples_and_eval_set_writer(tmp_path):
    ds = DynamicMixDataset(_corpus(), seed=123)
    first = make_fixed_examples(ds, 3, seed=9)
    again = make_fixed_examples(ds.with_config(seed=0, rank=3), 3, seed=9)
    assert all(_same(a, b) for a, b in zip(first, again))
    csv_path = write_eval_set(first, tmp_path / "dev", SR)
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["id", "mixture", "reference", "target", "interferer"] and len(rows) == 3
    for row, ex in zip(rows, first):
        for field in ("mixture", "reference", "target", "interferer"):
            audio, rate = sf.read(tmp_path / "dev" / row[field], dtype="float32")
            assert rate == SR and sf.info(tmp_path / "dev" / row[field]).subtype == "PCM_16"
            np.testing.assert_allclose(audio, ex[field], atol=1.0 / 32768 + 1e-7)


# -- collation -------------------------------------------------------------------


def test_collate_pads_references_and_records_lengths():
    examples = [
        {"mixture": np.full(6, i, np.float32), "reference": np.arange(1, n + 1, dtype=np.float32),
         "speaker": f"s{i}", "target_index": i}
        for i, n in enumerate([5, 8, 3])
    ]
    batch = collate_examples(examples)
    assert batch["mixture"].shape == (3, 6) and batch["mixture"][2, 0] == 2
    assert batch["reference"].shape == (3, 8) and batch["reference"].dtype == torch.float32
    assert batch["reference_lengths"].tolist() == [5, 8, 3] and batch["reference_lengths"].dtype == torch.int64
    assert batch["reference"][2].tolist() == [1, 2, 3, 0, 0, 0, 0, 0]
    assert batch["speaker"] == ["s0", "s1", "s2"] and batch["target_index"].dtype == torch.int64
    examples[1]["mixture"] = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="mixture"):
        collate_examples(examples)
    padded = collate_examples(examples, pad_fixed=True)
    assert padded["mixture"].shape == (3, 6) and padded["lengths"].tolist() == [6, 4, 6]


# -- packs -----------------------------------------------------------------------


def test_mulaw_round_trip_error_is_small():
    x = _speech(2.0, 0).astype(np.float64) * 2.0
    codes = mulaw_encode(x)
    assert codes.dtype == np.uint8
    y = mulaw_decode(codes)
    snr = 10 * np.log10(np.sum(x**2) / np.sum((x - y) ** 2))
    assert snr > 30.0
    assert mulaw_encode(np.array([-1.0, 1.0, 2.0])).tolist() == [0, 255, 255]
    small = np.linspace(-1e-3, 1e-3, 101)
    assert np.max(np.abs(mulaw_decode(mulaw_encode(small)) - small)) < 1e-4


def test_pack_round_trip_without_soundfile(tmp_path, monkeypatch):
    for spk, seeds in {"ls_1": [1, 2, 3], "ls_2": [4], "vctk_3": [5, 6]}.items():
        (tmp_path / "speech" / spk).mkdir(parents=True)
        for s in seeds:  # written at 16 kHz: loading resamples to 8 kHz
            sf.write(tmp_path / "speech" / spk / f"u{s}.flac", np.repeat(_speech(2.0, s), 2), 2 * SR)
    (tmp_path / "noise").mkdir()
    sf.write(tmp_path / "noise" / "n.wav", _speech(3.0, 9), SR)
    (tmp_path / "noise" / "manifest.csv").write_text("path,category,seconds\nn.wav,rain,3.0\n")
    speech = SpeakerCorpus.from_folders(tmp_path / "speech", SR)
    noise = NoiseCorpus.from_manifest(tmp_path / "noise" / "manifest.csv", SR)
    out = tmp_path / "pack.npz"
    summary = write_pack(out, speech, noise, max_seconds_per_speaker=4.5, max_seconds_per_noise=2.0,
                         exclude_speakers=["ls_2"])
    write_pack(tmp_path / "speech_only.npz", speech)
    assert summary["speakers"] == 2 and summary["utterances"] == 4  # ls_1 capped at two 2 s utterances
    with np.load(out, allow_pickle=False) as data:
        assert data["audio"].dtype == np.uint8 and data["speech_speakers"].dtype.kind == "U"
    for name in ("soundfile", "soxr", "scipy"):  # the GPU machine has only numpy and torch
        monkeypatch.setitem(sys.modules, name, None)
    packed = SpeakerCorpus.from_pack(out)
    assert packed.speakers == ["ls_1", "vctk_3"] and packed.sample_rate == SR
    assert packed.num_utterances("ls_1") == 2 and packed.num_utterances("vctk_3") == 2
    for k in range(2):
        y = packed.load("vctk_3", k).astype(np.float64)
        x = speech.load("vctk_3", k).astype(np.float64)
        x *= 0.9 / np.max(np.abs(x))  # packs peak-normalise each clip
        assert 10 * np.log10(np.sum(x**2) / np.sum((x - y) ** 2)) > 30.0
    packed_noise = NoiseCorpus.from_pack(out)
    assert packed_noise.categories == ["rain"] and len(packed_noise.load(0)) == 2 * SR
    ds = DynamicMixDataset(packed, packed_noise, p_speed=1.0, p_reverb=1.0, segment_seconds=1.0,
                           reference_seconds=(1.0, 1.0), min_reference_seconds=0.5, min_target_seconds=0.5)
    assert ds[0]["mixture"].shape == (SR,)
    assert read_pack(out).noise_categories == ["rain"]
    assert type(SpeakerCorpus.from_pack(tmp_path / "speech_only.npz")) is SpeakerCorpus
    with pytest.raises(ValueError, match="holds no noise"):
        NoiseCorpus.from_pack(tmp_path / "speech_only.npz")


def test_merge_keeps_every_clip_in_order_and_checks_rates():
    speech = SpeakerCorpus.merge(_corpus(), SpeakerCorpus.from_arrays({"extra:9": [_speech(2.0, 9)]}, SR))
    assert type(speech) is SpeakerCorpus
    assert speech.speakers == sorted(_corpus().speakers + ["extra:9"])
    np.testing.assert_array_equal(speech.load("extra:9", 0), _speech(2.0, 9))
    noise = NoiseCorpus.merge(_noise(), _noise())
    assert type(noise) is NoiseCorpus and len(noise) == 4 and noise.category(3) == "tick"
    np.testing.assert_array_equal(noise.load(2), _noise().load(0))
    with pytest.raises(ValueError, match="share a sample rate"):
        NoiseCorpus.merge(_noise(), NoiseCorpus.from_arrays([_speech(1.0, 1)], 2 * SR))
    with pytest.raises(ValueError, match="at least one"):
        SpeakerCorpus.merge()


# -- splits ----------------------------------------------------------------------


def test_speaker_disjoint_split_is_deterministic_and_spans_corpora():
    speakers = [f"ls:{i}" for i in range(40)] + [f"vctk:p{i}" for i in range(4)] + ["arctic:aew"]
    train, dev = speaker_disjoint_split(speakers, 8, seed=3, must_include=["arctic:aew"],
                                        prefer_prefixes=["ls:", "vctk:"])
    assert not set(train) & set(dev) and set(train) | set(dev) == set(speakers)
    assert len(dev) == 8 and "arctic:aew" in dev
    assert sum(s.startswith("vctk:") for s in dev) >= 3 and sum(s.startswith("ls:") for s in dev) >= 3
    shuffled = list(reversed(speakers))
    assert speaker_disjoint_split(shuffled, 8, 3, ["arctic:aew"], ["ls:", "vctk:"]) == (train, dev)
    assert speaker_disjoint_split(speakers, 8, seed=4)[1] != speaker_disjoint_split(speakers, 8, seed=3)[1]
    picked = spanning_dev_speakers(speakers, {"ls": 5, "vctk": 2}, seed=0)
    assert sum(s.startswith("ls:") for s in picked) == 5 and sum(s.startswith("vctk:") for s in picked) == 2
    assert spanning_dev_speakers(speakers, {"ls": 5, "vctk": 1}, seed=0)[:5] == picked[:5]  # ls draw unchanged
    with pytest.raises(ValueError, match="n_dev"):
        speaker_disjoint_split(speakers, 100, seed=0)
    with pytest.raises(ValueError, match="must_include"):
        speaker_disjoint_split(speakers, 2, seed=0, must_include=["nobody"])


# -- LibriMix ----------------------------------------------------------------------

_MIXES = [("100-1-0", "200-1-0"), ("200-1-1", "300-1-0"), ("300-1-1", "100-1-1"),
          ("100-1-2", "300-1-2"), ("200-1-2", "100-1-0")]


def _utt(uid: str) -> np.ndarray:
    return _speech(0.6 + (zlib.crc32(uid.encode()) % 5) / 10, zlib.crc32(uid.encode()))


@pytest.fixture
def librimix(tmp_path):
    """A fake ROOT/wav8k/min tree; rows mix relative, absolute and foreign absolute paths."""
    root = tmp_path / "LibriMix"
    base = root / "wav8k" / "min"
    (base / "metadata").mkdir(parents=True)
    rows = []
    for r, (u1, u2) in enumerate(_MIXES):
        mid = f"{u1}_{u2}"
        s1, s2 = _utt(u1), _utt(u2)
        n = min(len(s1), len(s2))
        rels = {}
        for folder, audio in (("s1", s1[:n]), ("s2", s2[:n]), ("mix_clean", s1[:n] + s2[:n])):
            (base / "dev" / folder).mkdir(parents=True, exist_ok=True)
            sf.write(base / "dev" / folder / f"{mid}.wav", audio, SR, subtype="FLOAT")
            rel = f"wav8k/min/dev/{folder}/{mid}.wav"
            rels[folder] = rel if r < 2 else str(root / rel) if r < 4 else f"/elsewhere/LibriMix/{rel}"
        rows.append([mid, rels["mix_clean"], rels["s1"], rels["s2"], n])
    with open(base / "metadata" / "mixture_dev_mix_clean.csv", "w", newline="") as f:
        csv.writer(f).writerows([["mixture_ID", "mixture_path", "source_1_path", "source_2_path", "length"]] + rows)
    return root


def _which_utterance(reference: np.ndarray) -> str:
    matches = [u for pair in _MIXES for u in pair if np.array_equal(reference[:200], _utt(u)[:200])]
    assert len(set(matches)) == 1
    return matches[0]


def test_librimix_each_talker_is_a_target(librimix):
    ds = Libri2MixTSE(librimix, split="dev", sample_rate=SR)
    assert len(ds) == 10 and ds.speakers == ["100", "200", "300"]
    for i in range(len(ds)):
        ex = ds[i]
        u_t, u_i = _MIXES[i // 2][i % 2], _MIXES[i // 2][1 - i % 2]
        n = len(ex["mixture"])
        np.testing.assert_array_equal(ex["target"], _utt(u_t)[:n])
        np.testing.assert_array_equal(ex["interferer"], _utt(u_i)[:n])
        np.testing.assert_allclose(ex["mixture"], ex["target"] + ex["interferer"], atol=1e-6)
        assert ex["speaker"] == u_t.split("-")[0] and ex["target_index"] == i % 2
        assert ds.speakers[ex["speaker_index"]] == ex["speaker"]
        assert not ex["noise"].any()


def test_librimix_training_reference_is_another_utterance(librimix):
    ds = Libri2MixTSE(librimix, sample_rate=SR, segment_seconds=0.5, seed=4)
    seen = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            ex = ds[i]
            assert len(ex["mixture"]) == len(ex["target"]) == SR // 2
            np.testing.assert_allclose(ex["mixture"], ex["target"] + ex["interferer"], atol=1e-6)
            own = _MIXES[i // 2][i % 2]
            ref = _which_utterance(ex["reference"])
            assert ref != own and ref.split("-")[0] == own.split("-")[0]
            seen.add((i, ref))
    assert len(seen) > len(ds)  # references change between epochs
    ds.set_epoch(2)
    again = Libri2MixTSE(librimix, sample_rate=SR, segment_seconds=0.5, seed=4, epoch=2)
    assert all(_same(ds[i], again[i]) for i in range(len(ds)))


def test_librimix_enrollment_list_is_written_once_and_reused(librimix, tmp_path):
    enrollment = tmp_path / "lists" / "dev_enrollment.csv"
    first = Libri2MixTSE(librimix, sample_rate=SR, enrollment=enrollment, seed=1)
    content = enrollment.read_text()
    entries = read_enrollment_list(enrollment)
    assert len(entries) == 10 and not any(e.reference_path.startswith("/") for e in entries)
    second = Libri2MixTSE(librimix, sample_rate=SR, enrollment=enrollment, seed=999)
    assert enrollment.read_text() == content
    for i in range(len(first)):
        ref = _which_utterance(second[i]["reference"])
        assert np.array_equal(first[i]["reference"], second[i]["reference"])
        own = _MIXES[i // 2][i % 2]
        assert ref != own and ref.split("-")[0] == own.split("-")[0]


def test_librimix_metadata_path_checks_arguments(tmp_path):
    assert metadata_path(tmp_path, 16000, "max", "train-360", "mix_both") == (
        tmp_path / "wav16k" / "max" / "metadata" / "mixture_train-360_mix_both.csv")
    with pytest.raises(ValueError, match="split"):
        metadata_path(tmp_path, split="train")
    with pytest.raises(ValueError, match="sample_rate"):
        metadata_path(tmp_path, sample_rate=44100)
