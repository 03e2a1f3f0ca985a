#!/usr/bin/env python
"""Where a training step's time goes: data, forward, backward, optimiser (numbers, not tests).

Builds the dataset and model of a training YAML, then times ``--steps`` steps (after
``--warmup`` untimed ones) in the trainer's order, each phase measured separately:

- data: drawing and collating one batch of dynamic mixtures (in the main process: what a
  data worker would have to keep up with),
- forward, loss, backward, clip + AdamW step, for each variant: ``fp32``; ``bf16`` (autocast,
  as the trainer's ``bf16_cpu``); ``bf16-fused`` (the same with torch's fused attention
  kernel forced, i.e. the trainer before :mod:`usef.modules.attention`); ``bf16-weights`` (the
  same autocast with the model's weights held in bf16 and fp32 master copies for AdamW, as the
  trainer's ``train.bf16_weights`` (:class:`usef.train.master_weights.MasterWeights`): gradients
  copied up, the step taken on the masters, the weights copied down, all inside the optimiser phase).

A variant may end in ``:item`` or ``:batch`` (dynamic mixing only): its batches then draw the
reference length per example (padded to the longest of the batch, as before 2026-12-05) or once
per batch (``data.mix.reference_length_group: batch``); without a suffix, as the config says. The
two data variants hold the same examples but for the reference lengths (and, for speakers with
one recording, where the target's crop sits). A variant may also change the model after ``@``
(``bf16@encoder_channels=8``, ``bf16@separator_args.num_layers=3``; YAML values, comma-separated):
what a smaller model would save, on the same batches.

The variants' steps are interleaved on the same batches, so the machine's drifts hit them
alike. Prints median seconds per phase, seconds per step and mixtures per CPU-second
(``batch / (step time x threads)``):

    python tools/profile_train_step.py egs/speakers/conf/cpu_usef_conformer_8k_hard.yaml \\
        --threads 2 --variants bf16-fused bf16
    python tools/profile_train_step.py egs/speakers/conf/cpu_usef_conformer_8k_stage13b.yaml \\
        --threads 2 --variants bf16:item bf16:batch bf16:batch@encoder_channels=8 \\
        bf16:batch@separator_args.num_layers=3
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from usef.data import collate_examples
from usef.models import build_model, model_arguments
from usef.modules.attention import fused_attention_only
from usef.train import losses
from usef.train.config import load_config, resolve_config
from usef.train.data import build_data
from usef.train.master_weights import MasterWeights

VARIANTS = ("fp32", "bf16", "bf16-fused", "bf16-weights")
REFERENCE_LENGTHS = ("item", "batch")


def _variant(text: str) -> tuple[str, str | None, dict[str, Any]]:
    """``"bf16:batch@encoder_channels=8"`` -> ``("bf16", "batch", {"encoder_channels": 8})``."""
    head, _, model_changes = text.partition("@")
    name, _, lengths = head.partition(":")
    if name not in VARIANTS or (lengths and lengths not in REFERENCE_LENGTHS):
        raise argparse.ArgumentTypeError(
            f"{text!r}: want one of {VARIANTS}, optionally followed by :item or :batch and @KEY=VALUE,...")
    changes = {}
    for item in filter(None, model_changes.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"{text!r}: model changes are KEY=VALUE, got {item!r}")
        changes[key] = yaml.safe_load(value)
    return name, lengths or None, changes


def _model_args(cfg: dict, changes: dict[str, Any]) -> dict[str, Any]:
    """The config's full model arguments with dotted ``changes`` (``separator_args.num_layers``)."""
    args = copy.deepcopy(model_arguments(cfg["model"]["name"], **cfg["model"]["args"]))
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = args
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return args


def _phase_times(model, optimizer, loss_fn, batch: dict, variant: str, grad_clip: float,
                 masters: MasterWeights | None = None) -> dict:
    """One training step of ``model`` on ``batch`` (with ``masters``: of their working copy, the
    optimiser holding the masters); seconds per phase (data excluded)."""
    bf16 = variant.startswith("bf16")
    context = fused_attention_only() if variant == "bf16-fused" else contextlib.nullcontext()
    tic = time.perf_counter()
    with context:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            estimate = model(batch["mixture"], batch["reference"], batch.get("reference_lengths"))
        loss = loss_fn(estimate.float(), batch["target"], batch.get("lengths"))
        t_forward = time.perf_counter()
        loss.backward()
    t_backward = time.perf_counter()
    if masters is not None:  # bf16-weights: fp32 masters take the step
        masters.gradients_to_master()
    torch.nn.utils.clip_grad_norm_(masters.master.parameters() if masters else model.parameters(), grad_clip)
    optimizer.step()
    if masters is not None:
        masters.weights_to_working()
    t_opt = time.perf_counter()
    return {"forward": t_forward - tic, "backward": t_backward - t_forward, "optimizer": t_opt - t_backward}


def _profile(cfg: dict, variants: list[str], steps: int, warmup: int, batch_size: int) -> dict:
    """Steps of every variant interleaved (same batches, same initial weights), so that the
    machine's drifts hit all of them alike; median seconds per phase."""
    t = cfg["train"]
    args = model_arguments(cfg["model"]["name"], **cfg["model"]["args"])
    data = build_data({**cfg, "dev": {**cfg["dev"], "n_items": 0}}, int(args["sample_rate"]), 0, ROOT / "exp")
    loss_fn = getattr(losses, t["loss"])
    grad_clip = float(t["grad_clip"] or math.inf)
    parsed = {variant: _variant(variant) for variant in variants}
    datasets = {None: data.train}
    for _, lengths, _ in parsed.values():
        if lengths is not None and lengths not in datasets:
            if not hasattr(data.train, "with_config"):
                raise ValueError(f"--variants ...:{lengths} needs data.type: dynamic_mix")
            datasets[lengths] = data.train.with_config(reference_length_group=1 if lengths == "item" else batch_size)
    runs = {}
    for variant in variants:
        torch.manual_seed(0)
        model = build_model(cfg["model"]["name"], **_model_args(cfg, parsed[variant][2])).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=float(t["weight_decay"]))
        masters = None
        if parsed[variant][0] == "bf16-weights":
            masters = MasterWeights(model)
            model = masters.working
        runs[variant] = (model, optimizer, masters, {"data": [], "forward": [], "backward": [], "optimizer": []})
    for step in range(warmup + steps):
        batches, t_data = {}, {}
        for lengths, dataset in datasets.items():
            tic = time.perf_counter()
            batches[lengths] = collate_examples([dataset[step * batch_size + j] for j in range(batch_size)])
            t_data[lengths] = time.perf_counter() - tic
        for variant, (model, optimizer, masters, phases) in runs.items():
            name, lengths, _ = parsed[variant]
            times = _phase_times(model, optimizer, loss_fn, batches[lengths], name, grad_clip, masters)
            if step >= warmup:
                phases["data"].append(t_data[lengths])
                for name, value in times.items():
                    phases[name].append(value)
    results = {}
    for variant, (model, _, _, phases) in runs.items():
        out = {name: statistics.median(v) for name, v in phases.items()}
        out["step"] = sum(out.values())
        out["step_without_data"] = out["step"] - out["data"]
        out["parameters_millions"] = sum(p.numel() for p in model.parameters()) / 1e6
        results[variant] = out
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    parser.add_argument("--variants", nargs="+", default=["fp32", "bf16"],
                        help=f"{', '.join(VARIANTS)}, each optionally :item or :batch (reference lengths) and "
                             "@KEY=VALUE,... (model arguments)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    for variant in args.variants:
        try:
            _variant(variant)
        except argparse.ArgumentTypeError as error:
            parser.error(str(error))
    torch.set_num_threads(args.threads)
    cfg = resolve_config(load_config(args.config))
    batch = args.batch_size or int(cfg["train"]["batch_size"])
    results = _profile(cfg, args.variants, args.steps, args.warmup, batch)
    for variant, r in results.items():
        r["mixtures_per_cpu_second"] = batch / (r["step"] * args.threads)
        r["mixtures_per_cpu_second_data_overlapped"] = batch / (r["step_without_data"] * args.threads)
        print(f"{variant:10s} threads={args.threads} batch={batch}x{cfg['train']['segment_seconds']}s  "
              + "  ".join(f"{k}={v:.3f}" for k, v in r.items()), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "batch": batch, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
