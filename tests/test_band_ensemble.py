"""BandEnsemble: a wide-band and a narrow-band model averaged on their shared STFT bins."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import speechlike

import usef
from usef.checkpoint import (
    CheckpointError,
    linked_folders,
    load_pretrained,
    read_weights,
    save_pretrained,
)
from usef.models import BandEnsemble, build_model

WIDE = {"sample_rate": 16000, "n_fft": 128, "hop_length": 64}  # 125 Hz per bin, as the tiny 8 kHz preset


def _scaled_head(model: torch.nn.Module, mask: float) -> torch.nn.Module:
    # the mask head outputs exactly mask + 0j: the model returns mask * istft(stft(input))
    head = model.separator.output
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[: model.separator.num_bins] = mask
    return model


def _tiny(seed: int, identity: bool = False, **args) -> torch.nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model("usef_conformer", preset="tiny", **args)
    if identity:  # the model returns istft(stft(input))
        _scaled_head(model, 1.0)
    return model.eval()


def _ensemble(identity: bool = False, **options) -> BandEnsemble:
    return BandEnsemble(_tiny(0, identity, **WIDE), _tiny(1, identity), **options).eval()


def _signal(seconds: float, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(speechlike(seconds, 16000, seed=seed))


def test_shapes_and_odd_lengths():
    model = _ensemble(narrow_weight=0.5)
    mixture = torch.stack([_signal(1.0, 0), _signal(1.0, 1)])[:, :15999]  # odd: padded to the rate ratio
    reference = torch.stack([_signal(0.8, 2), _signal(0.8, 3)])
    with torch.inference_mode():
        out = model(mixture, reference)
    assert out.shape == (2, 15999) and torch.isfinite(out).all()
    assert model.stft is model.wide.stft and model.sample_rate == 16000


def test_narrow_input_is_the_low_band_at_the_narrow_rate():
    # a band-limited signal taken to 8 kHz in the shared STFT domain matches the 8 kHz sampling
    # of the same sum of tones (edges excluded: the STFT's reflection padding)
    t16, t8 = np.arange(16000) / 16000, np.arange(8000) / 8000
    tones = [(440.0, 0.3), (1250.0, 0.2), (2900.0, 0.1)]
    x16 = sum(a * np.sin(2 * np.pi * f * t16) for f, a in tones).astype(np.float32)
    x8 = sum(a * np.sin(2 * np.pi * f * t8) for f, a in tones)
    y8 = _ensemble()._to_narrow(torch.from_numpy(x16)[None])[0].numpy()
    inner = slice(200, -200)
    error = np.sqrt(np.mean((y8[inner] - x8[inner]) ** 2) / np.mean(x8[inner] ** 2))
    assert y8.shape == (8000,) and error < 1e-3


def test_weight_zero_is_the_wide_model_alone_and_identity_members_return_the_input():
    mixture, reference = _signal(1.0)[None], _signal(0.7, 5)[None]
    with torch.inference_mode():
        alone = _ensemble(narrow_weight=0.0)
        wide_only = alone.wide(mixture, reference)
        gain = (wide_only * mixture).sum() / wide_only.pow(2).sum()
        torch.testing.assert_close(alone(mixture, reference), wide_only * gain, atol=1e-5, rtol=1e-4)
        # identity members (mask 1): the narrow member's input and output are the low band
        # of the mixture, so the average gives the band-limited mixture back
        same = _ensemble(identity=True, narrow_weight=0.7)(mixture, reference)
    error = (same - mixture).pow(2).mean() / mixture.pow(2).mean()
    assert error < 1e-4


def test_the_band_above_the_narrow_nyquist_is_the_wide_models():
    mixture = torch.randn(1, 16000) * 0.1
    reference = _signal(0.7, 5)[None]
    with torch.inference_mode():
        both = _ensemble(narrow_weight=1.0)(mixture, reference)
        alone = _ensemble(narrow_weight=0.0)(mixture, reference)
    spec = lambda x: torch.stft(x, 128, 64, window=torch.hann_window(128), return_complex=True)
    change = lambda lo, hi: float((spec(both)[:, lo:hi] - spec(alone)[:, lo:hi]).norm()
                                  / spec(alone)[:, lo:hi].norm())
    # the combined spectrum goes through one iSTFT, which spreads a low-band change only into
    # the bins next to it: from three bins above the shared 33 the wide model's band is kept
    assert change(36, 65) < 0.02 and change(0, 28) > 0.5


def test_batch_equals_single_with_padded_references():
    model = _ensemble(narrow_weight=0.5, narrow_shifts=2)
    mixtures = torch.stack([_signal(1.0, 0), _signal(1.0, 1)])
    refs = [_signal(0.9, 2), _signal(0.6, 3)]
    padded = torch.zeros(2, refs[0].numel())
    padded[0], padded[1, : refs[1].numel()] = refs[0], refs[1]
    lengths = torch.tensor([refs[0].numel(), refs[1].numel()])
    with torch.inference_mode():
        batch = model.extract(mixtures, model.prepare_condition(padded, lengths), shifts=2)
        singles = [model.extract(mixtures[i : i + 1], model.prepare_condition(refs[i][None]), shifts=2) for i in range(2)]
    torch.testing.assert_close(batch, torch.cat(singles), atol=2e-6, rtol=1e-5)


def test_checkpoint_round_trip_and_the_api(tmp_path):
    model = _ensemble(narrow_weight=0.6, narrow_shifts=2)
    directory = model.save_pretrained(tmp_path / "ens", {"shifts": 2})
    loaded = load_pretrained(directory)
    assert isinstance(loaded, BandEnsemble) and loaded.config == model.config and loaded.inference_shifts == 2
    mixture, reference = _signal(1.2, 0), _signal(0.8, 4)
    with torch.inference_mode():
        expected = model.extract(mixture[None], model.prepare_condition(reference[None]), shifts=2)[0]
    extractor = usef.load_model(directory, device="cpu", level="model")
    assert extractor.shifts == 2
    out = extractor.extract(mixture.numpy(), reference.numpy(), sample_rate=16000)
    np.testing.assert_allclose(out, expected.numpy(), atol=1e-5)
    # 8 kHz input is taken to the ensemble's rate and back, like any model
    assert extractor.extract(mixture.numpy()[::2], reference.numpy()[::2], sample_rate=8000).shape == (9600,)
    # an enrollment holds both members' reference states
    enrollment = extractor.enroll([reference.numpy(), _signal(0.7, 6).numpy()], sample_rate=16000)
    assert extractor.extract(mixture.numpy(), enrollment, sample_rate=16000).shape == mixture.shape


def test_linked_members_load_like_copied_ones_and_refuse_a_changed_member(tmp_path):
    from conftest import load_tool

    wide = save_pretrained(_tiny(0, **WIDE), tmp_path / "wide")
    narrow = save_pretrained(_tiny(1), tmp_path / "narrow", {"output_level": "calibrated"})
    tool = load_tool("make_band_ensemble")
    common = ["--wide", str(wide), "--narrow", str(narrow), "--narrow-weight", "0.6"]
    copied = tool.main([*common, "--out", str(tmp_path / "copied")])
    linked = tool.main([*common, "--link-members", "--out", str(tmp_path / "linked")])
    assert (linked / "model.safetensors").stat().st_size < 1000  # no tensor of its own
    assert read_weights(linked).keys() == read_weights(copied).keys()
    assert linked_folders(linked) == {"wide": wide.resolve(), "narrow": narrow.resolve()}
    mixture, reference = _signal(1.0).numpy(), _signal(0.7, 5).numpy()
    outs = [usef.load_model(d, device="cpu").extract(mixture, reference, sample_rate=16000) for d in (copied, linked)]
    np.testing.assert_array_equal(outs[0], outs[1])
    # the trainer's init_from reads linked tensors too
    from usef.train.trainer import _load_weights

    assert _load_weights(_ensemble(), linked, strict=True) == []
    # a member whose weights changed, or that is gone, is an error, never a silent swap
    save_pretrained(_tiny(7, **WIDE), tmp_path / "wide")
    with pytest.raises(CheckpointError, match="SHA-256 differs"):
        load_pretrained(linked)
    save_pretrained(_tiny(0, **WIDE), tmp_path / "wide")  # the same bytes again
    assert linked_folders(linked)
    (narrow / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="does not exist"):
        linked_folders(linked)
    # a link must name a folder that holds exactly that member
    with pytest.raises(ValueError, match="does not hold"):
        _ensemble().save_pretrained(tmp_path / "bad", link={"wide": copied})


def test_a_tensor_both_held_and_linked_is_an_error(tmp_path):
    from safetensors.torch import save_file

    wide = save_pretrained(_tiny(0, **WIDE), tmp_path / "wide")
    narrow = save_pretrained(_tiny(1), tmp_path / "narrow")
    model = BandEnsemble(load_pretrained(wide), load_pretrained(narrow)).eval()
    linked = model.save_pretrained(tmp_path / "linked", link={"wide": wide, "narrow": narrow})
    first = next(iter(read_weights(wide)))
    save_file({f"wide.{first}": read_weights(wide)[first]}, str(linked / "model.safetensors"))
    with pytest.raises(CheckpointError, match="also held"):
        read_weights(linked)


def test_config_and_weights_must_agree(tmp_path):
    directory = save_pretrained(_ensemble(), tmp_path / "ens")
    text = (directory / "config.yaml").read_text()
    (directory / "config.yaml").write_text(text.replace("dim: 16", "dim: 24", 1))
    with pytest.raises(CheckpointError, match="do not match"):
        load_pretrained(directory)


def test_bad_members_and_options_raise_clear_errors():
    wide, narrow = _tiny(0, **WIDE), _tiny(1)
    with pytest.raises(ValueError, match="integer multiple"):
        BandEnsemble(narrow, wide)
    with pytest.raises(ValueError, match="window and hop"):
        BandEnsemble(_tiny(0, sample_rate=16000, n_fft=64, hop_length=32), narrow)
    with pytest.raises(ValueError, match="narrow_weight"):
        BandEnsemble(wide, narrow, narrow_weight=1.5)
    with pytest.raises(ValueError, match="mapping"):
        build_model("band_ensemble", wide={"model": "usef_conformer"}, narrow=None)
    with pytest.raises(ValueError, match="reference recording"):
        _ensemble().prepare_condition(embedding=torch.zeros(1, 8))


def test_freeze_narrow_trains_the_wide_member_only():
    model = _ensemble(narrow_weight=0.5, freeze_narrow=True).train()
    assert not model.narrow.training and model.wide.training
    narrow_before = {k: v.clone() for k, v in model.narrow.state_dict().items()}
    wide_before = {k: v.clone() for k, v in model.wide.state_dict().items()}
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    mixture, reference = _signal(1.0)[None], _signal(0.7, 5)[None]
    model(mixture, reference).pow(2).mean().backward()
    optimiser.step()
    assert all(torch.equal(v, narrow_before[k]) for k, v in model.narrow.state_dict().items())
    assert any(not torch.equal(v, wide_before[k]) for k, v in model.wide.state_dict().items())
    assert model.config["freeze_narrow"] is True


def test_calibrated_members_are_averaged_as_they_come():
    # members trained to output the target's level (and silence for an absent talker) must not
    # be re-fitted to the mixture: weight 0 then gives the wide member's raw output, gain and all
    mixture, reference = _signal(1.0)[None], _signal(0.7, 5)[None]
    with torch.inference_mode():
        raw = _ensemble(narrow_weight=0.0, fit_levels=False)
        torch.testing.assert_close(raw(mixture, reference), raw.wide(mixture, reference), atol=1e-5, rtol=1e-4)


def test_level_from_narrow_takes_the_narrow_members_level_and_keeps_the_shape():
    mixture, reference = _signal(1.0)[None], _signal(0.7, 5)[None]
    inner = slice(400, -400)  # away from the STFT's edges
    with torch.inference_mode():
        # identity members, the narrow one at half level: the mixture fit undoes that gain, the
        # narrow member's level brings it back, over the whole band (one gain)
        quiet = BandEnsemble(_tiny(0, True, **WIDE), _scaled_head(_tiny(1), 0.5), narrow_weight=0.6,
                             level_from_narrow=True).eval()
        out = quiet(mixture, reference)[0]
        torch.testing.assert_close(out[inner], 0.5 * mixture[0, inner], atol=2e-3, rtol=0)
        # a narrow member that answers "not here" with silence silences the ensemble; fitted to
        # the mixture alone, the wide member's output would come back at the mixture's level
        silent = BandEnsemble(_tiny(0, True, **WIDE), _scaled_head(_tiny(1), 0.0), narrow_weight=0.6,
                              level_from_narrow=True).eval()
        fitted = BandEnsemble(silent.wide, silent.narrow, narrow_weight=0.6).eval()
        assert silent(mixture, reference).abs().max() < 1e-6
        assert fitted(mixture, reference).pow(2).sum() > 0.1 * mixture.pow(2).sum()
        # with a narrow member that speaks, the output is the fitted ensemble times one gain
        anchored = BandEnsemble(_tiny(0, **WIDE), _tiny(1), narrow_weight=0.6, level_from_narrow=True).eval()
        free = BandEnsemble(anchored.wide, anchored.narrow, narrow_weight=0.6).eval()
        a, b = anchored(mixture, reference)[0], free(mixture, reference)[0]
        gain = (a @ b) / (b @ b)
        torch.testing.assert_close(a, gain * b, atol=1e-5, rtol=0)
    assert anchored.config["level_from_narrow"] is True


def test_make_band_ensemble_keeps_a_calibrated_level_only_when_both_members_have_one(tmp_path):
    from conftest import load_tool

    tool = load_tool("make_band_ensemble")
    wide = save_pretrained(_tiny(0, **WIDE), tmp_path / "wide", {"output_level": "calibrated"})
    narrow = save_pretrained(_tiny(1), tmp_path / "narrow", {"output_level": "calibrated"})
    plain = save_pretrained(_tiny(2), tmp_path / "plain")
    both = tool.main(["--wide", str(wide), "--narrow", str(narrow), "--out", str(tmp_path / "both")])
    mixed = tool.main(["--wide", str(wide), "--narrow", str(plain), "--out", str(tmp_path / "mixed")])
    assert load_pretrained(both).fit_levels is False and load_pretrained(both).output_level == "calibrated"
    assert load_pretrained(mixed).fit_levels is True and load_pretrained(mixed).output_level is None
    assert load_pretrained(mixed).level_from_narrow is False
    # only the narrow member calibrated: it lends the ensemble its level
    plain_wide = save_pretrained(_tiny(3, **WIDE), tmp_path / "plain_wide")
    lent = load_pretrained(tool.main(["--wide", str(plain_wide), "--narrow", str(narrow), "--out", str(tmp_path / "lent")]))
    assert lent.fit_levels is True and lent.level_from_narrow is True and lent.output_level == "calibrated"
