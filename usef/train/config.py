"""Training configuration: defaults, ``key.sub=value`` overrides and validation.

One YAML holds a whole run: ``model: {name, args}``, ``data: {type, ...}`` (see
:func:`usef.train.data.build_data`), ``train: {...}`` and ``dev: {...}`` (keys and defaults below),
and optionally ``init_from: DIR`` or ``init_from: {path: DIR, strict: false}``.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Sequence
from typing import Any

import yaml

from usef.train import ema, losses

TRAIN_DEFAULTS: dict[str, Any] = {
    "batch_size": 2, "segment_seconds": 4.0, "lr": 1e-4, "weight_decay": 0.0, "betas": [0.9, 0.999], "eps": 1e-8,
    "warmup_steps": 1000, "max_steps": 100_000, "decay": "cosine", "min_lr": None, "grad_clip": 5.0, "grad_accum": 1,
    "bf16": True, "bf16_cpu": False, "num_workers": 2, "log_every": 50, "dev_every": 1000, "save_every": None,
    "keep_last_k": 3, "keep_best_k": 5, "seed": 3407, "max_minutes": None, "loss": "neg_si_sdr", "device": "auto",
    # torch intra-op threads for this run (None: torch's default). On a shared CPU machine
    # one thread per busy process avoids the 3-10x slowdown of oversubscribed OpenMP pools.
    "threads": None,
    # loss floor of target-absent items (data.mix.p_target_absent > 0): output energy this
    # many dB below the mixture counts as silence
    "absent_floor_db": -30.0,
    # fresh runs: scale the output layer so the median output level of 4 training batches
    # matches the targets before step 1 (usef.train.calibrate), for a level-dependent fine-tune
    # of a model trained scale-invariantly
    "calibrate_output_gain": False,
    # with max_minutes: re-plan max_steps (at most the configured one) from the pace so far at
    # every log step, so that the decay ends with the budget instead of being cut off mid-way
    "fit_schedule_to_minutes": False,
    # exponential moving average of the weights (usef.train.ema): checkpoints, best/ and the dev
    # curve hold the average, train_state.pt the raw weights; null: off
    "ema_decay": None, "ema_start_step": 0,
    # with bf16 autocast: run the steps on a bf16 copy of the weights, fp32 masters for the
    # optimiser, checkpoints and dev (usef.train.master_weights); -7 to -11 % per CPU step measured
    "bf16_weights": False,
    # with ema_decay: also score the raw weights at each dev pass (dev_raw_* in log.jsonl)
    "ema_dev_raw": True,
}
DEV_DEFAULTS: dict[str, Any] = {"n_items": 200, "seed": 20250, "batch_size": 1, "segment_seconds": None, "mix": {}}
_SCIENTIFIC = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")
TOP_KEYS = {"model", "data", "train", "dev", "init_from", "exp_dir"}


# --------------------------------------------------------------------------- config
def apply_overrides(config: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``config`` with ``key.sub=value`` overrides applied.

    Values are parsed with ``yaml.safe_load`` (``train.lr=3e-4`` gives a float,
    ``data.mix.sir_range=[-5,5]`` a list, ``train.max_minutes=null`` None).
    """
    out = copy.deepcopy(config)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {item!r} must look like key.sub=value")
        parts = key.strip().split(".")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise TypeError(f"override {item!r}: {part!r} is not a mapping")
            node = child
        value = yaml.safe_load(raw) if raw.strip() else None
        # YAML 1.1 reads "3e-4" (no dot) as a string; the numbers people type must stay numbers
        if isinstance(value, str) and _SCIENTIFIC.match(value):
            value = float(value)
        node[parts[-1]] = value
    return out


def load_config(path: os.PathLike, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Read a YAML training config and apply ``overrides``."""
    with open(path, encoding="utf-8") as handle:
        config = yaml.safe_load(handle) or {}
    if not isinstance(config, dict):
        raise TypeError(f"config {path} must be a YAML mapping")
    return apply_overrides(config, overrides)


def resolve_config(config: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults and check keys; raises ValueError naming the bad key."""
    unknown = set(config) - TOP_KEYS
    if unknown:
        raise ValueError(f"config has unknown top-level keys {sorted(unknown)}; allowed: {sorted(TOP_KEYS)}")
    cfg = copy.deepcopy(config)
    model = cfg.get("model")
    if not isinstance(model, dict) or not model.get("name"):
        raise ValueError("config needs model: {name: <registry name>, args: {...}}")
    model.setdefault("args", {})
    if not isinstance(cfg.get("data"), dict) or "type" not in cfg["data"]:
        raise ValueError("config needs data: {type: dynamic_mix | libri2mix, ...}")
    for section, defaults in (("train", TRAIN_DEFAULTS), ("dev", DEV_DEFAULTS)):
        given = cfg.get(section) or {}
        bad = set(given) - set(defaults)
        if bad:
            raise ValueError(f"config section {section!r} has unknown keys {sorted(bad)}; allowed: {sorted(defaults)}")
        cfg[section] = {**copy.deepcopy(defaults), **given}
    t = cfg["train"]
    for key in ("batch_size", "grad_accum", "max_steps", "log_every"):
        if not isinstance(t[key], int) or t[key] < 1:
            raise ValueError(f"train.{key} must be a positive integer, got {t[key]!r}")
    if t["threads"] is not None and (not isinstance(t["threads"], int) or t["threads"] < 1):
        raise ValueError(f"train.threads must be a positive integer or null, got {t['threads']!r}")
    if t["bf16_weights"] is not True and t["bf16_weights"] is not False:
        raise ValueError(f"train.bf16_weights must be true or false, got {t['bf16_weights']!r}")
    if t["fit_schedule_to_minutes"] and t["max_minutes"] is None:
        raise ValueError("train.fit_schedule_to_minutes needs train.max_minutes (the budget to fit)")
    ema.check_settings(t["ema_decay"], t["ema_start_step"])
    if t["min_lr"] is None:
        t["min_lr"] = 0.01 * float(t["lr"])  # decay ends at 1 % of the peak unless told otherwise
    if t["save_every"] is None:
        t["save_every"] = t["dev_every"] or t["max_steps"]
    if t["loss"] not in losses.__all__:
        raise ValueError(f"train.loss must be one of {losses.__all__}, got {t['loss']!r}")
    init = cfg.get("init_from")
    if isinstance(init, str):
        cfg["init_from"] = {"path": init, "strict": True}
    elif isinstance(init, dict):
        if "path" not in init:
            raise ValueError("init_from must be a directory or {path: DIR, strict: bool}")
        cfg["init_from"] = {"path": init["path"], "strict": bool(init.get("strict", True))}
    return cfg
