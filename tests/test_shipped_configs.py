"""Every training config shipped under ``egs/`` resolves, its mixing options are valid, and its
``init_from`` weights load.

A recipe that fails only after a user has waited for data and model construction is a broken
recipe: a 16 kHz stage that named an 8 kHz folder without ``strict: false`` stopped on a shape
mismatch at start-up (2026-12-05). Building each model and loading its starting weights here
catches that, and a folder that left the bundle, before anyone runs the stage.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from usef.models import build_model
from usef.train.config import load_config, resolve_config
from usef.train.data import mix_configs
from usef.train.trainer import _load_weights

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(REPO.glob("egs/*/conf/**/*.yaml"))


def test_the_configs_are_found():
    assert len(CONFIGS) >= 30, CONFIGS  # a moved folder must not turn this file into a no-op


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(REPO / "egs")) for p in CONFIGS])
def test_shipped_config_resolves_and_its_starting_weights_load(path: Path, monkeypatch, one_thread):
    monkeypatch.chdir(REPO)  # configs name packs and folders relative to the repository root
    cfg = resolve_config(load_config(path))
    if cfg["data"]["type"] == "dynamic_mix":
        mix_configs(cfg)  # raises on a misspelt or out-of-range mixing option, as the trainer would
    init = cfg.get("init_from")
    if not init:
        return
    folder = REPO / init["path"]
    if not folder.is_dir():
        # a stage that started from weights since retired must say so, and how to get them back
        text = path.read_text(encoding="utf-8")
        assert "retired" in text and "git checkout" in text, f"{path}: init_from {init['path']} is missing"
        return
    with torch.no_grad():
        model = build_model(cfg["model"]["name"], **cfg["model"]["args"])
        _load_weights(model, folder, init["strict"])  # raises on a shape mismatch or a missing tensor
