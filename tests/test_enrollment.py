"""Reusable enrollments: Extractor.enroll, extract(mixture, enrollment), save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SR, build_tiny, speechlike

import usef
from usef.api import Extractor
from usef.enrollment import Enrollment, model_fingerprint


@pytest.fixture
def clips() -> dict:
    return {"a": speechlike(1.0, SR, seed=3, f0=125.0), "b": speechlike(1.5, SR, seed=4, f0=128.0),
            "mixture": speechlike(2.0, SR, seed=1, f0=120.0) + speechlike(2.0, SR, seed=2, f0=210.0)}


def _tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x)[None]


def test_one_clip_is_exactly_the_reference_path(clips):
    for name in ("usef_conformer", "embedding_conformer"):
        extractor = Extractor(build_tiny(name), name=name)
        enrollment = extractor.enroll(clips["a"], sample_rate=SR, trim=False)
        assert enrollment.num_clips == 1
        expected = extractor.extract(clips["mixture"], clips["a"], sample_rate=SR)
        np.testing.assert_array_equal(extractor.extract(clips["mixture"], enrollment, sample_rate=SR), expected)
        # long mixtures: the enrollment's condition is reused for every chunk, as a reference's is
        chunked = extractor.extract(clips["mixture"], clips["a"], sample_rate=SR, chunk_seconds=0.5)
        np.testing.assert_array_equal(
            extractor.extract(clips["mixture"], enrollment, sample_rate=SR, chunk_seconds=0.5), chunked)


def test_two_clips_attend_to_the_frames_of_both(clips):
    model = build_tiny()
    enrollment = Extractor(model).enroll([clips["a"], clips["b"]], sample_rate=SR, trim=False)
    with torch.inference_mode():
        # each clip through the shared encoder alone, then its frames side by side
        per_clip = [model.encode_reference(_tensor(clips[k]))[0] for k in ("a", "b")]
        features = torch.cat(per_clip, dim=2)
        # (1, C, T_a + T_b, F)
        torch.testing.assert_close(enrollment.state["features"][None], features, atol=1e-5, rtol=0)
        assert enrollment.state["clip_frames"].tolist() == [f.shape[2] for f in per_clip]
        pieces = [model.cross_attention.project_key_value(f) for f in per_clip]
        expected = {"keys": torch.cat([p[0] for p in pieces], dim=2), "values": torch.cat([p[1] for p in pieces], dim=2)}
        condition = enrollment.condition(model)
        torch.testing.assert_close(condition["keys"], expected["keys"], atol=1e-5, rtol=0)
        torch.testing.assert_close(condition["values"], expected["values"], atol=1e-5, rtol=0)
        mixture = _tensor(clips["mixture"])
        torch.testing.assert_close(model.extract(mixture, condition), model.extract(mixture, expected),
                                   atol=1e-5, rtol=0)
        # and it is not what either clip alone gives
        alone = model(mixture, _tensor(clips["a"]))
        assert (model.extract(mixture, condition) - alone).abs().max() > 1e-4


def test_batch_equals_single(clips):
    extractor = Extractor(build_tiny(), batch_size=4)
    both = extractor.enroll([clips["a"], clips["b"]], sample_rate=SR, trim=False)
    one = extractor.enroll(clips["b"], sample_rate=SR, trim=False)
    mixtures = [clips["mixture"], clips["mixture"][::-1].copy(), clips["mixture"]]
    batch = extractor.extract(mixtures, [both, one, one], sample_rate=SR)
    for mixture, enrollment, out in zip(mixtures, [both, one, one], batch):
        np.testing.assert_allclose(out, extractor.extract(mixture, enrollment, sample_rate=SR), atol=1e-5)


def test_embedding_models_average_the_clip_vectors(clips):
    model = build_tiny("embedding_conformer")
    enrollment = Extractor(model).enroll([clips["a"], clips["b"]], sample_rate=SR, trim=False)
    with torch.inference_mode():
        vectors = [model.prepare_condition(_tensor(clips[k]))["embedding"][0] for k in ("a", "b")]
    torch.testing.assert_close(enrollment.state["embedding"], (vectors[0] + vectors[1]) / 2, atol=1e-6, rtol=0)

    # a pre-computed-vector model: the embedder's vector of each clip (here: its length in s), averaged
    dvector = build_tiny("dvector_conformer")
    dim = dvector.embedding_dim
    extractor = Extractor(dvector, embedder=lambda wave, rate: np.full(dim, wave.shape[0] / rate, np.float32))
    enrollment = extractor.enroll([clips["a"], clips["b"]], sample_rate=SR, trim=False)
    np.testing.assert_allclose(enrollment.state["embedding"].numpy(), np.full(dim, 1.25), rtol=1e-6)
    np.testing.assert_array_equal(
        extractor.extract(clips["mixture"], enrollment, sample_rate=SR),
        extractor.extract(clips["mixture"], embedding=np.full(dim, 1.25, dtype=np.float32), sample_rate=SR))


def test_enroll_trims_silence(clips):
    extractor = Extractor(build_tiny())
    padded = np.concatenate([np.zeros(SR, np.float32), clips["b"], np.zeros(2 * SR, np.float32)])
    trimmed = extractor.enroll(padded, sample_rate=SR)
    assert trimmed.clip_seconds[0] == pytest.approx(1.5 + 2 * 0.1, abs=0.05)
    assert extractor.enroll(padded, sample_rate=SR, trim=False).clip_seconds == [4.5]
    # too little speech to stand alone (0.2 s + margins < 0.5 s): the whole clip is used
    brief = np.concatenate([clips["a"][: SR // 5], np.zeros(SR, np.float32)])
    assert extractor.enroll(brief, sample_rate=SR).clip_seconds == [1.2]
    with pytest.raises(ValueError, match="vad"):
        extractor.enroll(padded, sample_rate=SR, vad="nope")


def test_save_load_round_trip_and_other_model_refused(clips, tmp_path, tiny_model_dir):
    extractor = usef.load_model(tiny_model_dir, device="cpu")
    enrollment = extractor.enroll([clips["a"], clips["b"]], sample_rate=SR)
    path = enrollment.save(tmp_path / "alice.enroll")
    loaded = usef.Enrollment.load(path, model=extractor)
    assert loaded.header() == enrollment.header()
    assert loaded.header()["num_clips"] == 2 and loaded.model_name == "tiny" and loaded.sample_rate == SR
    for key, value in enrollment.state.items():
        torch.testing.assert_close(loaded.state[key], value, atol=0, rtol=0)
    expected = extractor.extract(clips["mixture"], enrollment, sample_rate=SR)
    np.testing.assert_array_equal(extractor.extract(clips["mixture"], loaded, sample_rate=SR), expected)
    # usef.extract takes it too; the same checkpoint built afresh has the same fingerprint
    np.testing.assert_array_equal(usef.extract(clips["mixture"], loaded, sample_rate=SR, model=tiny_model_dir),
                                  expected)
    assert model_fingerprint(build_tiny()) == loaded.fingerprint

    other = Extractor(build_tiny(seed=1), name="other")
    with pytest.raises(ValueError, match="enrollment: made for model 'tiny'"):
        Enrollment.load(path, model=other)
    with pytest.raises(ValueError, match="enroll the clips again"):
        other.extract(clips["mixture"], loaded, sample_rate=SR)


def test_bad_files_and_arguments(clips, tmp_path):
    with pytest.raises(FileNotFoundError):
        Enrollment.load(tmp_path / "missing.enroll")
    junk = tmp_path / "junk.enroll"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not an enrollment file"):
        Enrollment.load(junk)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "weights.enroll"))
    with pytest.raises(ValueError, match="not an enrollment file"):
        Enrollment.load(tmp_path / "weights.enroll")

    extractor = Extractor(build_tiny())
    enrollment = extractor.enroll(clips["a"], sample_rate=SR)
    with pytest.raises(ValueError, match="either an enrollment or embedding"):
        extractor.extract(clips["mixture"], enrollment, embedding=np.zeros(8), sample_rate=SR)
    # a list with one mixture still means a batch, and says where several clips go
    with pytest.raises(TypeError, match="enroll"):
        extractor.extract(clips["mixture"], [clips["a"], clips["b"]], sample_rate=SR)
    with pytest.raises(ValueError, match=r"clips\[1\]"):
        extractor.enroll([clips["a"], clips["a"][:100]], sample_rate=SR)
    with pytest.raises(ValueError, match="sample_rate"):
        extractor.enroll(clips["a"])
    with pytest.raises(ValueError, match="no clip"):
        extractor.enroll([])


def test_default_model_follows_the_enrollment(clips):
    # at 16 kHz "default" would be the 16 kHz model; an 8 kHz model's enrollment keeps its own
    extractor = usef.load_model("usef-conformer-8k", device="cpu")
    enrollment = extractor.enroll(clips["a"], sample_rate=SR)
    mixture16 = np.repeat(clips["mixture"], 2)
    out = usef.extract(mixture16, enrollment, sample_rate=16000)
    np.testing.assert_array_equal(out, extractor.extract(mixture16, enrollment, sample_rate=16000))
