"""Extractors: the pipeline contract, registry, batching, gradients, checkpoints."""

import inspect

import pytest
import torch

from usef.checkpoint import CheckpointError, load_pretrained, load_state
from usef.models import MODELS, build_model, list_models, model_arguments

NAMES = list_models()


def _inputs(model, batch=2, seconds=0.5, ref_seconds=0.4, seed=0):
    g = torch.Generator().manual_seed(seed)
    sr = model.sample_rate
    mixture = torch.randn(batch, int(seconds * sr), generator=g)
    reference = torch.randn(batch, int(ref_seconds * sr), generator=g)
    kwargs = {}
    if not model.needs_reference:
        kwargs["embedding"] = torch.randn(batch, model.embedding_dim, generator=g)
        reference = None
    return mixture, reference, kwargs


def test_registry_has_required_models():
    assert {"usef_tfgridnet", "usef_conformer", "embedding_tfgridnet", "embedding_conformer"} <= set(MODELS)


def test_unknown_model_lists_choices():
    with pytest.raises(ValueError, match="usef_conformer"):
        build_model("nope")


def test_unknown_argument_and_preset():
    with pytest.raises(ValueError, match="does not take"):
        build_model("usef_conformer", preset="tiny", colour="red")
    with pytest.raises(ValueError, match="no preset"):
        build_model("usef_conformer", preset="huge")


def test_overrides_merge_separator_args():
    args = model_arguments("usef_conformer", separator_args={"num_layers": 2})
    assert args["separator_args"]["num_layers"] == 2 and args["separator_args"]["dim"] == 192


@pytest.mark.parametrize("name", NAMES)
def test_default_builders_and_sizes(name):
    model = build_model(name)
    assert model.sample_rate in (8000, 16000)
    params = sum(p.numel() for p in model.parameters())
    if name == "usef_tfgridnet":
        # released USEF-TFGridNet: 15.64 M (USEF_FACTS.md §1.1, computed from the config)
        assert abs(params - 15.64e6) / 15.64e6 < 0.05
    if name == "usef_conformer":
        assert params <= 5e6


@pytest.mark.parametrize("name", NAMES)
def test_forward_shape(name):
    model = build_model(name, preset="tiny").eval()
    mixture, reference, kwargs = _inputs(model)
    with torch.no_grad():
        out = model(mixture, reference, **kwargs)
    assert out.shape == mixture.shape
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", [n for n in NAMES if MODELS[n].cls.__name__ == "UsefExtractor" or "embedding_" in n])
def test_batch_equals_single_with_mixed_reference_lengths(name):
    torch.manual_seed(0)
    model = build_model(name, preset="tiny").eval()
    sr = model.sample_rate
    mixture = torch.randn(3, sr // 2)
    lengths = torch.tensor([sr // 2, sr // 3 + 7, sr // 4 + 13])  # not multiples of the hop
    reference = torch.randn(3, int(lengths.max()))
    for i, n in enumerate(lengths.tolist()):
        reference[i, n:] = 0.0
    with torch.no_grad():
        batched = model(mixture, reference, reference_lengths=lengths)
        for i, n in enumerate(lengths.tolist()):
            single = model(mixture[i : i + 1], reference[i : i + 1, :n])
            assert torch.allclose(batched[i : i + 1], single, atol=1e-4), (name, i)


def test_batched_references_match_single_at_default_stft():
    torch.manual_seed(1)
    model = build_model("usef_conformer", separator_args={"num_layers": 1}).eval()
    lengths = torch.tensor([8000, 6001, 4097])
    reference = torch.randn(3, 8000)
    mixture = torch.randn(3, 8000)
    with torch.no_grad():
        batched = model(mixture, reference, reference_lengths=lengths)
        for i, n in enumerate(lengths.tolist()):
            assert torch.allclose(batched[i], model(mixture[i : i + 1], reference[i : i + 1, :n])[0], atol=1e-4)


def test_reference_lengths_are_checked():
    model = build_model("usef_conformer", preset="tiny").eval()
    with pytest.raises(ValueError, match="reference_lengths"):
        model(torch.randn(2, 4000), torch.randn(2, 4000), reference_lengths=torch.tensor([4000, 5000]))


@pytest.mark.parametrize("name", NAMES)
def test_condition_is_reusable_across_chunks(name):
    model = build_model(name, preset="tiny").eval()
    mixture, reference, kwargs = _inputs(model, batch=1)
    with torch.no_grad():
        condition = model.prepare_condition(reference, embedding=kwargs.get("embedding"))
        whole = model.extract(mixture, condition)
        chunks = torch.cat((mixture, mixture.flip(-1)))  # a batch of two chunks, one condition
        out = model.extract(chunks, condition)
    assert torch.allclose(out[:1], whole, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    model = build_model(name, preset="tiny").train()
    mixture, reference, kwargs = _inputs(model)
    model(mixture, reference, **kwargs).pow(2).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing


def test_reference_path_gets_gradient_through_the_reference():
    """Through both paths: the output depends on the reference signal itself."""
    model = build_model("usef_conformer", preset="tiny")
    mixture, reference, _ = _inputs(model)
    reference.requires_grad_(True)
    mixture.requires_grad_(True)
    model(mixture, reference).pow(2).mean().backward()
    assert reference.grad.abs().sum() > 0 and mixture.grad.abs().sum() > 0


def test_silent_mixture_gives_silence():
    model = build_model("usef_conformer", preset="tiny").eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 4000), torch.randn(1, 4000))
    assert torch.isfinite(out).all() and out.abs().max() < 1e-6


def test_wrong_inputs_raise():
    model = build_model("usef_conformer", preset="tiny").eval()
    with pytest.raises(ValueError, match="reference"):
        model(torch.randn(1, 4000))
    with pytest.raises(ValueError, match="embedding-free"):
        model(torch.randn(1, 4000), torch.randn(1, 4000), embedding=torch.randn(1, 8))
    with pytest.raises(ValueError, match=r"\(B, T_mix\)"):
        model(torch.randn(4000), torch.randn(1, 4000))
    dvector = build_model("dvector_conformer", preset="tiny")
    with pytest.raises(ValueError, match="pre-computed 256-d"):
        dvector(torch.randn(1, 4000), torch.randn(1, 4000))
    with pytest.raises(ValueError, match=r"\(B, 256\)"):
        dvector(torch.randn(1, 4000), embedding=torch.randn(1, 12))


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(tmp_path, name):
    model = build_model(name, preset="tiny").eval()
    mixture, reference, kwargs = _inputs(model, batch=1)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = load_pretrained(tmp_path / "ckpt")
    assert loaded.name == name and loaded.sample_rate == model.sample_rate
    # the config is exactly the constructor's arguments: nothing lost, nothing extra
    assert set(model.config) == set(inspect.signature(type(model).__init__).parameters) - {"self"}
    assert loaded.config == model.config
    with torch.no_grad():
        assert torch.equal(model(mixture, reference, **kwargs), loaded(mixture, reference, **kwargs))


def test_checkpoint_errors_name_the_file(tmp_path):
    model = build_model("usef_conformer", preset="tiny")
    directory = model.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError, match="missing_dir"):
        load_pretrained(tmp_path / "missing_dir")
    (directory / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_pretrained(directory)
    build_model("usef_conformer", preset="tiny", encoder_channels=6).save_pretrained(tmp_path / "other")
    (directory / "model.safetensors").write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_pretrained(directory)
    (directory / "config.yaml").write_text("model: [unclosed")
    with pytest.raises(CheckpointError, match="config.yaml"):
        load_pretrained(directory)
    (directory / "config.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        load_pretrained(directory)


def test_widen_state_starts_a_wideband_model_from_the_narrowband_one():
    narrow = build_model("usef_conformer", preset="tiny")  # 8 kHz, n_fft 64: 125 Hz per bin
    wide = build_model("usef_conformer", preset="tiny", sample_rate=16000, n_fft=128, hop_length=64)
    state = {k: v.clone() for k, v in narrow.state_dict().items()}
    widened = wide.widen_state(state, 8000, 64, 32)
    assert sorted(widened) == ["separator.input.0.weight", "separator.output.bias", "separator.output.weight"]
    assert load_state(wide, state, source="narrow", strict=False) == []  # every tensor now fits
    f_old, f_new = 33, 65
    w_in = wide.separator.input[0].weight.detach().view(-1, 2 * 4, f_new)  # (D, 2C, F)
    assert torch.equal(w_in[:, :, :f_old], narrow.separator.input[0].weight.detach().view(-1, 8, f_old))
    assert not w_in[:, :, f_old:].any()
    # the separator's output (a mask here) is exactly zero above the narrow band before training
    with torch.no_grad():
        out = wide.separator(torch.randn(2, 8, 7, f_new))
    assert out.shape == (2, 2, 7, f_new) and not out[..., f_old:].any() and out[..., :f_old].abs().sum() > 0
    # bins that do not line up in Hz (or frames of another length) are not widened
    assert wide.widen_state(dict(narrow.state_dict()), 8000, 128, 64) == []
    assert wide.widen_state(dict(narrow.state_dict()), 8000, 64, 16) == []
