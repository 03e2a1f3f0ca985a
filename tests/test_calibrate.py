"""Output-gain calibration before a level-dependent fine-tune (usef.train.calibrate)."""

from __future__ import annotations

import pytest
import torch

from usef.models import build_model
from usef.train.calibrate import (
    calibrate_output_gain,
    level_error_db,
    output_layer,
    scale_output,
)


def _forward(model, batch):
    return model(batch["mixture"], batch["reference"])


def _batch(seed: int, present: list[int] | None = None) -> dict:
    gen = torch.Generator().manual_seed(seed)
    batch = {"mixture": torch.randn(3, 4000, generator=gen), "reference": torch.randn(3, 3000, generator=gen),
             "target": 0.1 * torch.randn(3, 4000, generator=gen)}
    if present is not None:
        batch["target_present"] = torch.tensor(present)
        batch["target"][batch["target_present"] == 0] = 0.0  # absent: silence, level undefined
    return batch


@pytest.mark.parametrize("name", ["usef_conformer", "usef_tfgridnet"])
def test_scaling_the_output_layer_scales_the_waveform_exactly(name):
    torch.manual_seed(0)
    model = build_model(name, preset="tiny").eval()
    batch = _batch(1)
    with torch.no_grad():
        before = _forward(model, batch)
        scale_output(model, -13.75)
        after = _forward(model, batch)
    gain = 10 ** (-13.75 / 20)
    assert torch.allclose(after, gain * before, rtol=1e-4, atol=1e-7 * before.abs().max().item())


def test_calibration_zeroes_the_median_level_error_and_skips_absent_items():
    torch.manual_seed(0)
    model = build_model("usef_conformer", preset="tiny")
    batches = [_batch(2, present=[1, 0, 1]), _batch(3, present=[1, 1, 0])]
    before = level_error_db(model, batches, _forward)
    assert before.shape == (4,)  # the two absent items (silent targets) are left out
    gain_db = calibrate_output_gain(model, batches, _forward)
    assert gain_db == pytest.approx(-float(before.median()), abs=1e-6)
    after = level_error_db(model, batches, _forward)
    assert float(after.median()) == pytest.approx(0.0, abs=1e-3)
    assert torch.allclose(after - before, torch.full_like(before, gain_db), atol=1e-3)
    assert model.training  # the mode it came in with


def test_calibration_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="separator.output"):
        output_layer(torch.nn.Linear(2, 2))
    model = build_model("usef_conformer", preset="tiny")
    with pytest.raises(ValueError, match="target-present"):
        calibrate_output_gain(model, [_batch(4, present=[0, 0, 0])], _forward)
