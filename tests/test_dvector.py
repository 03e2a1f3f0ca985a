"""D-vector tables: grid, exact crop vectors, leakage-free references, training and API paths."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SR, speechlike

from usef.api import Extractor
from usef.data import DynamicMixDataset, SpeakerCorpus, collate_examples, write_pack
from usef.embeddings import (
    DVectorTable,
    WindowEmbedder,
    embed_corpus,
    grid_windows,
    write_dvector_table,
)

REPO = Path(__file__).resolve().parents[1]


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ValueError:  # sys.modules[name] is None: deliberately blocked
        return False


HAVE_RESEMBLYZER = _installed("resemblyzer")
needs_resemblyzer = pytest.mark.skipif(not HAVE_RESEMBLYZER, reason="resemblyzer (optional extra) is not installed")


class FakeEmbedder(WindowEmbedder):
    """A deterministic function of the window's samples: a fixed projection of band energies."""

    name = "fake"

    def __init__(self, dim: int = 16, sample_rate: int = SR, **grid):
        super().__init__(**grid)
        self.embedding_dim, self.sample_rate = dim, sample_rate
        self.calls: list[int] = []

    def embed_windows(self, windows, valid):
        spec = np.abs(np.fft.rfft(windows, axis=1))
        bands = spec[:, : spec.shape[1] // 8 * 8].reshape(len(windows), 8, -1).sum(-1)
        proj = np.random.default_rng(1).standard_normal((8, self.embedding_dim))
        out = np.tanh(np.log1p(bands) @ proj) + 1.5
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def __call__(self, wave, sample_rate):
        self.calls.append(sample_rate)
        return super().__call__(wave, sample_rate)


def _unit(rng, n, dim):
    x = rng.standard_normal((n, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _table(tmp_path, lengths=(64000, 5000), dim=6):
    rng = np.random.default_rng(0)
    partials = [_unit(rng, len(grid_windows(n, SR)), dim) for n in lengths]
    speakers = [f"s{i}" for i in range(len(lengths))]
    return write_dvector_table(tmp_path / "t.npz", partials, speakers, lengths, SR, model="test"), partials


# -- grid and table ----------------------------------------------------------------------------
def test_grid_windows_known_answer():
    np.testing.assert_array_equal(grid_windows(20000, SR), [[0, 12800], [3200, 16000], [6400, 19200]])
    np.testing.assert_array_equal(grid_windows(5000, SR), [[0, 5000]])  # shorter than a window: one, padded
    np.testing.assert_array_equal(grid_windows(40000, 16000, 1.0, 0.5), [[0, 16000], [8000, 24000], [16000, 32000],
                                                                         [24000, 40000]])


def test_table_round_trip_and_validation(tmp_path):
    table, partials = _table(tmp_path)
    loaded = DVectorTable.load(tmp_path / "t.npz")
    np.testing.assert_array_equal(loaded.partials, np.concatenate(partials).astype(np.float32))
    np.testing.assert_array_equal(loaded.offsets, [0, 17, 18])  # (64000 - 12800) // 3200 + 1 = 17, then 1
    assert loaded.speakers == ["s0", "s1"] and loaded.keys == ["s0/0", "s1/1"] and loaded.model == "test"
    assert (loaded.sample_rate, loaded.window_seconds, loaded.hop_seconds, loaded.embedding_dim) == (SR, 1.6, 0.4, 6)
    assert loaded.index("s1", 0) == 1
    with pytest.raises(KeyError, match="s9"):
        loaded.index("s9", 0)
    with pytest.raises(ValueError, match="grid"):  # 17 windows claimed for a 4 s utterance
        DVectorTable(table.partials, table.offsets, [32000, 5000], table.speakers, table.keys, SR)
    np.savez(tmp_path / "bad.npz", partials=table.partials)
    with pytest.raises(ValueError, match="offsets"):
        DVectorTable.load(tmp_path / "bad.npz")


def test_crop_vector_is_normalised_mean_of_exactly_the_windows_inside(tmp_path):
    table, partials = _table(tmp_path)
    p = partials[0]
    # windows [3200k, 3200k + 12800): inside [3000, 20000) are k = 1 and 2 only
    np.testing.assert_array_equal(table.select(0, 3000, 20000, SR), [1, 2])
    expected = (p[1] + p[2]) / np.linalg.norm(p[1] + p[2])
    np.testing.assert_allclose(table.vector(0, 3000, 20000, SR), expected, atol=1e-6)
    np.testing.assert_allclose(table.vector(0, 6000, 40000, 2 * SR), expected, atol=1e-6)  # same crop at 16 kHz
    # 0.75 s crop: windows 5 and 6 contain it; 5's centre (22400) is nearer the crop's (23000)
    np.testing.assert_array_equal(table.select(0, 20000, 26000, SR), [5])
    np.testing.assert_allclose(table.vector(0, 20000, 26000, SR), p[5], atol=1e-6)
    # whole utterance around a forbidden region: only windows ending by 20000 or starting at 30000+
    np.testing.assert_array_equal(table.select(0, 0, 64000, SR, forbid=(20000, 30000)), [0, 1, 2, *range(10, 17)])
    # a short crop next to the forbidden region takes the nearest window clear of it
    np.testing.assert_array_equal(table.select(0, 30000, 31000, SR, forbid=(18000, 30000)), [10])
    with pytest.raises(LookupError):
        table.select(1, 0, 2000, SR, forbid=(3000, 4000))  # the only window covers the forbidden part


def test_partials_see_only_their_window(tmp_path):
    wave = speechlike(5.0, SR, seed=4)
    for embedder in (FakeEmbedder(), FakeEmbedder(sample_rate=16000)):  # the second resamples each window
        partials = embedder.partials(wave, SR)
        assert partials.shape == (len(grid_windows(wave.size, SR)), 16)
        changed = wave.copy()
        changed[:3200], changed[16000:] = 0.0, 0.0  # everything outside window 1, [3200, 16000)
        again = embedder.partials(changed, SR)
        np.testing.assert_array_equal(again[1], partials[1])
        assert not np.allclose(again[0], partials[0]) and not np.allclose(again[-1], partials[-1])
        np.testing.assert_allclose(embedder(wave, SR), partials.mean(0) / np.linalg.norm(partials.mean(0)), atol=1e-6)
    exact = FakeEmbedder().embed_windows(wave[None, 3200:16000], np.array([12800]))
    np.testing.assert_allclose(FakeEmbedder().partials(wave, SR)[1], exact[0], atol=1e-6)


# -- dataset -----------------------------------------------------------------------------------
def _single_recording_corpus():
    clips = {f"spk{i}": [speechlike(6.0 + i, SR, seed=i, f0=100.0 + 25 * i)] for i in range(4)}
    clips["short"] = [speechlike(2.6, SR, seed=9, f0=230.0)]  # no room for 1 s of target + a window and a hop
    clips["medium"] = [speechlike(4.2, SR, seed=8, f0=260.0)]  # room once the target is cut to 2.2 s
    return SpeakerCorpus.from_arrays(clips, SR)


def _one_hot_table(corpus):
    """Partial j = unit vector j: a crop's vector names exactly the windows it averaged."""
    rows = [(s, k) for s in corpus.speakers for k in range(corpus.num_utterances(s))]
    lengths = [len(corpus.load(s, k)) for s, k in rows]
    offsets = np.concatenate([[0], np.cumsum([len(grid_windows(n, SR)) for n in lengths])])
    return DVectorTable(np.eye(int(offsets[-1]), dtype=np.float32), offsets, lengths, [s for s, _ in rows],
                        [f"{s}/{k}" for s, k in rows], SR)


def test_single_recording_reference_never_uses_target_windows():
    corpus = _single_recording_corpus()
    table = _one_hot_table(corpus)
    mix = {"segment_seconds": 3.0, "reference_seconds": (1.0, 2.5), "p_speed": 1.0, "length": 1000}
    ds = DynamicMixDataset(corpus, dvectors=table, **mix)
    cases, targets = set(), set()
    for i in range(60):
        plan, vector = ds.plan(i), ds[i]["embedding"]
        target, ref = plan.target, plan.reference
        assert target.speaker != "short" and target.factor == ref.factor == 1.0
        targets.add(target.speaker)
        assert all(c.factor != 1.0 for c in plan.interferers)  # interferers keep speed perturbation
        row = table.index(ref.speaker, ref.utterance)
        used = np.flatnonzero(vector > 1e-6)
        assert np.allclose(vector[used], 1 / np.sqrt(len(used)))
        windows = table.windows(row)[used - table.offsets[row]]
        assert ((used >= table.offsets[row]) & (used < table.offsets[row + 1])).all()
        assert ((windows[:, 1] <= target.start) | (windows[:, 0] >= target.stop)).all(), (i, windows, target)
        grid = table.windows(row)
        inside = np.flatnonzero((grid[:, 0] >= ref.start) & (grid[:, 1] <= ref.stop))
        if len(inside):  # every window inside the reference crop, and nothing else
            np.testing.assert_array_equal(used - table.offsets[row], inside)
        else:  # one window, the nearest clear of the target
            assert len(used) == 1
        cases.add(len(inside) > 0)
    assert cases == {True, False} and "medium" in targets
    plain = DynamicMixDataset(corpus, **mix)  # without a table the short speaker is a target too
    assert any(plain.plan(i).target.speaker == "short" for i in range(40))


def test_dataset_emits_and_collates_embeddings(tmp_path):
    corpus = SpeakerCorpus.from_arrays({f"s{i}": [speechlike(2.5, SR, seed=10 * i + k) for k in range(2)]
                                        for i in range(3)}, SR)
    table = embed_corpus(corpus, FakeEmbedder(dim=12))
    ds = DynamicMixDataset(corpus, dvectors=table, segment_seconds=1.0, reference_seconds=(1.0, 2.0), length=10)
    examples = [ds[i] for i in range(3)]
    for example, i in zip(examples, range(3)):
        ref = ds.plan(i).reference
        expected = table.vector(table.index(ref.speaker, ref.utterance), ref.start, ref.stop, SR)
        np.testing.assert_array_equal(example["embedding"], expected)
    for pad in (False, True):
        batch = collate_examples(examples, pad_fixed=pad)
        assert batch["embedding"].shape == (3, 12) and batch["embedding"].dtype == torch.float32
    assert "embedding" in ds.with_config(seed=5)[0]
    other = SpeakerCorpus.from_arrays({"s0": [speechlike(2.5, SR)], "s1": [speechlike(2.5, SR)]}, SR)
    with pytest.raises(ValueError, match="'s0' has 2 utterances in the table and 1"):
        DynamicMixDataset(other, dvectors=table)
    stretched = SpeakerCorpus.from_arrays({f"s{i}": [speechlike(3.0, SR)] * 2 for i in range(3)}, SR)
    with pytest.raises(ValueError, match="other audio"):
        DynamicMixDataset(stretched, dvectors=table, segment_seconds=1.0, length=10)[0]


# -- training ----------------------------------------------------------------------------------
def _config(pack, table, dim):
    return {
        "model": {"name": "dvector_conformer", "args": {"preset": "tiny", "embedding_dim": dim}},
        "data": {"type": "dynamic_mix", "speech": str(pack), "dev_speakers": 2, "dvectors": table and str(table),
                 "mix": {"reference_seconds": [0.6, 1.0], "min_reference_seconds": 0.5, "min_target_seconds": 0.5}},
        "train": {"batch_size": 2, "segment_seconds": 0.5, "lr": 3e-3, "warmup_steps": 1, "max_steps": 3,
                  "num_workers": 0, "log_every": 1, "dev_every": 3, "seed": 7, "bf16": False},
        "dev": {"n_items": 2, "batch_size": 2},
    }


def test_tiny_dvector_conformer_trains_on_a_table(tmp_path):
    from usef.checkpoint import load_pretrained
    from usef.train.trainer import train

    speakers = {f"spk{s}": [speechlike(2.5, SR, seed=10 * s + u, f0=100.0 + 30 * s) for u in range(2)]
                for s in range(5)}
    pack = tmp_path / "speech.npz"
    write_pack(pack, SpeakerCorpus.from_arrays(speakers, SR))
    table = embed_corpus(SpeakerCorpus.from_pack(pack), FakeEmbedder(dim=8)).save(tmp_path / "dvectors.npz")
    torch.set_num_threads(1)
    events = []
    result = train(_config(pack, table, 8), tmp_path / "exp", callback=events.append)
    assert result.step == 3 and result.best is not None and np.isfinite(result.best["si_sdr"])
    assert all(np.isfinite(e["loss"]) for e in events if e["event"] == "step")
    model = load_pretrained(result.exp_dir / "best")
    assert model.name == "dvector_conformer" and model.embedding_dim == 8 and not model.needs_reference
    with pytest.raises(ValueError, match="data.dvectors"):
        train(_config(pack, None, 8), tmp_path / "exp2")
    with pytest.raises(ValueError, match="embedding_dim=16"):
        train(_config(pack, table, 16), tmp_path / "exp3")


# -- API ---------------------------------------------------------------------------------------
def _tiny_dvector(dim=16):
    from usef.models import build_model

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return build_model("dvector_conformer", preset="tiny", embedding_dim=dim).eval()


def test_api_computes_the_vector_from_the_reference(signals):
    embedder = FakeEmbedder(dim=16)
    extractor = Extractor(_tiny_dvector(), embedder=embedder)
    from_reference = extractor.extract(signals["mixture"], signals["reference"], sample_rate=SR)
    vector = FakeEmbedder(dim=16)(signals["reference"], SR)
    from_vector = extractor.extract(signals["mixture"], embedding=vector, sample_rate=SR)
    np.testing.assert_allclose(from_reference, from_vector, atol=1e-6)
    other = extractor.extract(signals["mixture"], embedding=FakeEmbedder(dim=16)(signals["target"], SR),
                              sample_rate=SR)
    assert not np.allclose(from_reference, other, atol=1e-4)  # the vector really conditions the output
    reference_16k = np.repeat(signals["reference"], 2)
    extractor.extract(signals["mixture"], reference_16k, sample_rate=SR, reference_sample_rate=16000)
    assert embedder.calls == [SR, SR]  # the vector is made at the model's rate, as the tables were


def test_api_without_resemblyzer_names_the_extra(monkeypatch, signals):
    monkeypatch.setitem(sys.modules, "resemblyzer", None)  # "import resemblyzer" now raises ImportError
    with pytest.raises(ImportError, match=r"usef\[resemblyzer\]"):
        Extractor(_tiny_dvector(256)).extract(signals["mixture"], signals["reference"], sample_rate=SR)
    with pytest.raises(ValueError, match="256-d"):
        Extractor(_tiny_dvector(16)).extract(signals["mixture"], signals["reference"], sample_rate=SR)
    out = Extractor(_tiny_dvector(256)).extract(signals["mixture"], embedding=np.ones(256, np.float32),
                                                sample_rate=SR)
    assert out.shape == signals["mixture"].shape


# -- the real model (optional extra) -----------------------------------------------------------
@needs_resemblyzer
def test_resemblyzer_vectors_are_unit_norm_and_tell_speakers_apart():
    import soundfile

    from usef.embeddings import ResemblyzerEmbedder

    embedder = ResemblyzerEmbedder()
    noise = (0.1 * np.random.default_rng(0).standard_normal(2 * 16000)).astype(np.float32)
    vector = embedder(noise, 16000)
    assert vector.shape == (256,) and vector.dtype == np.float32
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5
    demo = {n: soundfile.read(REPO / "usef/assets/demo" / f"{n}.wav", dtype="float32")[0]
            for n in ("mixture", "reference", "target")}
    ref, target, other = (embedder(x, SR) for x in (demo["reference"], demo["target"],
                                                    demo["mixture"] - demo["target"]))
    assert float(ref @ target) > float(ref @ other) + 0.1  # speaker 4481 vs speaker 7511
    partials = embedder.partials(demo["reference"], SR)
    changed = demo["reference"].copy()
    changed[12800:] = 0.0
    np.testing.assert_allclose(embedder.partials(changed, SR)[0], partials[0], atol=1e-5)


@needs_resemblyzer
def test_make_dvectors_tool_on_a_tiny_pack(tmp_path):
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import make_dvectors
    finally:
        sys.path.pop(0)
    pack = tmp_path / "p.npz"
    write_pack(pack, SpeakerCorpus.from_arrays({"a": [speechlike(2.0, SR, seed=1)], "b": [speechlike(1.0, SR)]}, SR))
    assert make_dvectors.main(["--pack", str(pack), "--out", str(tmp_path / "d.npz")]) == 0
    table = DVectorTable.load(tmp_path / "d.npz")
    assert table.partials.shape == (2 + 1, 256) and table.speakers == ["a", "b"] and table.model == "resemblyzer"
