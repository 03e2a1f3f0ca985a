"""Training loop: one process or DDP (torchrun), bf16 autocast, exact resume.

Everything comes from one config dict (:mod:`usef.train.config`); data building and the
step-indexed sampler live in :mod:`usef.train.data`, checkpoints and RNG state in
:mod:`usef.train.state`, the dev pass in :mod:`usef.train.dev`, and how a step runs on this
machine (DDP processes, devices, autocast, the model call) in :mod:`usef.train.runtime`.

Exactness: the data stream is a pure function of the optimizer step (a step-indexed batch
sampler over seeded datasets), the learning rate a pure function of the step, and the
process RNGs (python, numpy, torch, CUDA) of every rank are saved with each checkpoint. A
run killed at any point and resumed from its latest checkpoint therefore ends with the same
parameters as an uninterrupted one (bitwise on CPU, single process, ``num_workers=0``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from usef.checkpoint import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    load_state,
    read_config,
    read_weights,
    save_pretrained,
)
from usef.data import collate_examples
from usef.models import build_model
from usef.train import losses, state
from usef.train.calibrate import calibrate_output_gain
from usef.train.config import apply_overrides, load_config, resolve_config
from usef.train.data import StepBatchSampler, build_data, prepare_data, write_dev_set
from usef.train.dev import evaluate_dev
from usef.train.ema import WeightAverage
from usef.train.master_weights import MasterWeights
from usef.train.runtime import (
    Dist,
    autocast_context,
    check_embeddings,
    forward_batch,
    setup_distributed,
    to_device,
)
from usef.train.schedule import WarmupDecay, steps_within_budget

logger = logging.getLogger(__name__)
_clock = time.monotonic  # the wall clock of max_minutes; tests replace it

Callback = Callable[[dict[str, Any]], None]
__all__ = ["TrainResult", "apply_overrides", "evaluate_dev", "load_config", "prepare_data", "resolve_config",
           "train", "write_dev_set"]

# --------------------------------------------------------------------------- helpers


def _optimizer(model: torch.nn.Module, t: dict[str, Any]) -> torch.optim.Optimizer:
    # decay matrices and kernels only: shrinking norm gains and biases hurts and buys nothing
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    other = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": float(t["weight_decay"])},
              {"params": other, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=float(t["lr"]), betas=tuple(t["betas"]), eps=float(t["eps"]))


def _bf16_weights(t: dict[str, Any], info: Dist, autocast: Any) -> bool:
    """Whether this run holds its working weights in bf16 (``train.bf16_weights``)."""
    if not t["bf16_weights"]:
        return False
    if isinstance(autocast, torch.autocast):
        return True
    if (info.device.type == "cpu" and not t["bf16_cpu"]) or (info.device.type == "cuda" and not t["bf16"]):
        flag = "bf16_cpu" if info.device.type == "cpu" else "bf16"
        raise ValueError(f"train.bf16_weights needs bf16 autocast on {info.device.type}: set train.{flag}: true")
    # autocast was asked for but is off here (no native bf16): the weights stay in fp32 with it
    logger.warning("train.bf16_weights: bf16 autocast is off on this device, so the weights stay in fp32")
    return False


def _load_weights(model: torch.nn.Module, directory: Path, strict: bool) -> list[str]:
    weights = Path(directory) / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"init_from/resume: no {WEIGHTS_NAME} in {directory}")
    state = read_weights(directory)  # with the tensors of linked members (usef.checkpoint_io)
    if not strict and (Path(directory) / CONFIG_NAME).is_file():  # e.g. a 16 kHz model from an 8 kHz one: its low bins start from the 8 kHz weights
        args = read_config(directory)["args"]
        widened = model.widen_state(state, args["sample_rate"], args["n_fft"], args["hop_length"])
        if widened:
            logger.info("widened %s from %s Hz to %s Hz bins", widened, args["sample_rate"], model.sample_rate)
    return load_state(model, state, source=str(weights), strict=strict)


@dataclass
class TrainResult:
    """What :func:`train` returns: final step, why it stopped, the best dev record and the
    trained (unwrapped) model."""

    step: int
    stopped: str  # "max_steps" | "max_minutes"
    best: dict[str, Any] | None
    model: torch.nn.Module
    exp_dir: Path


# --------------------------------------------------------------------------- training
def train(config: dict[str, Any], exp_dir: os.PathLike, resume: bool = False,
          callback: Callback | None = None) -> TrainResult:
    """Train the model described by ``config`` into ``exp_dir``.

    With ``resume`` the latest complete checkpoint of ``exp_dir`` is continued exactly; if
    there is none, training starts from ``init_from`` weights (fresh optimizer) or scratch.
    Under ``torchrun`` (``WORLD_SIZE`` > 1) it runs DistributedDataParallel. ``callback``
    receives event dicts on rank 0 (``start``, ``step``, ``dev``, ``checkpoint``, ``end``).
    Global RNG states are restored when it returns.
    """
    cfg = resolve_config(config)
    t = cfg["train"]
    info = setup_distributed(str(t["device"]))
    try:
        with state.rng_scope(int(t["seed"])):
            if info.device.type == "cpu":
                torch.set_flush_denormal(True)  # denormals make CPU training several times slower
            try:
                return _run(cfg, Path(exp_dir), resume, callback if info.main else None, info)
            finally:
                if info.device.type == "cpu":
                    torch.set_flush_denormal(False)
    finally:
        if info.owns_group:
            dist.destroy_process_group()


def _run(cfg: dict[str, Any], exp_dir: Path, resume: bool, callback: Callback | None, info: Dist) -> TrainResult:
    t = cfg["train"]
    emit = callback or (lambda event: None)
    if info.main:
        exp_dir.mkdir(parents=True, exist_ok=True)
        state.remove_incomplete(exp_dir)
        previous = exp_dir / "train_config.yaml"
        if resume and previous.is_file():
            old = yaml.safe_load(previous.read_text(encoding="utf-8")) or {}
            changed = sorted(k for k in ("model", "data", "train", "dev") if old.get(k) != cfg.get(k))
            if changed:
                logger.warning("resuming with changed config sections %s (see %s): the run is no longer "
                               "an exact continuation", changed, previous)
        state.write_text_atomic(previous, yaml.safe_dump(cfg, sort_keys=False))
    info.barrier()

    if t["threads"] is not None:
        torch.set_num_threads(int(t["threads"]))
    model = build_model(cfg["model"]["name"], **cfg["model"]["args"]).to(info.device)
    if info.rank:
        torch.manual_seed(int(t["seed"]) + 7919 * info.rank)  # same init, different dropout per rank
    optimizer = _optimizer(model, t)
    scheduler = WarmupDecay(optimizer, float(t["lr"]), int(t["warmup_steps"]), int(t["max_steps"]),
                            str(t["decay"]), float(t["min_lr"]))

    step, rng_to_restore, best, saved_average = 0, None, None, None
    ckpt = state.latest_checkpoint(exp_dir) if resume else None
    if ckpt is not None:
        saved = state.load_train_state(ckpt)
        _load_weights(model, ckpt, strict=True)
        if "raw_weights" in saved:  # a run with a weight average: the model file holds the average
            saved_average = {name: tensor.clone() for name, tensor in model.state_dict().items()}
            model.load_state_dict(saved["raw_weights"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        step = int(saved["step"])
        if len(saved["rng"]) == info.world:
            rng_to_restore = saved["rng"][info.rank]
        else:
            logger.warning("checkpoint was written by %d ranks, now %d: RNG streams restart from the seed",
                           len(saved["rng"]), info.world)
        best = state.read_best(exp_dir)
        if best is not None and int(best.get("step", 0)) > step:
            best = None
        if info.main:
            state.RunLog(exp_dir).truncate(step)
            meta_score = state.dev_score(state.read_meta(ckpt))
            if meta_score is not None and (best is None or meta_score > best["si_sdr_imp"]):
                best = {"step": step, **state.read_meta(ckpt)["dev"]}  # killed before best was updated
                state.update_best(exp_dir, ckpt, best)
        logger.info("resumed from %s (step %d)", ckpt, step)
    else:
        if resume:
            logger.info("no checkpoint in %s: starting a new run", exp_dir)
        if cfg.get("init_from"):
            skipped = _load_weights(model, Path(cfg["init_from"]["path"]), cfg["init_from"]["strict"])
            logger.info("initialised from %s (fresh optimizer)%s", cfg["init_from"]["path"],
                        f"; skipped {skipped}" if skipped else "")

    average = None
    if t["ema_decay"] is not None:
        average = WeightAverage(model, float(t["ema_decay"]), int(t["ema_start_step"]))
        if saved_average is not None:
            average.load_state_dict(saved_average)
        elif ckpt is not None:
            logger.warning("%s holds no weight average: the average restarts from its weights", ckpt)

    data = build_data(cfg, model.sample_rate, info.rank, exp_dir)
    check_embeddings(model, data.train)
    if t["calibrate_output_gain"] and step == 0:
        size = int(t["batch_size"])
        probe = [to_device(collate_examples([data.train[i] for i in range(k * size, (k + 1) * size)]), info.device)
                 for k in range(4)]
        calibrate_output_gain(model, probe, forward_batch)  # before the DDP wrap, which broadcasts rank 0's weights
    autocast = autocast_context(cfg, info.device)
    # ``model`` holds the fp32 weights that learn, are averaged, scored and saved; ``runner``
    # runs the steps: the same module, or its bf16 working copy (train.bf16_weights), DDP-wrapped
    masters = MasterWeights(model) if _bf16_weights(t, info, autocast) else None
    runner = masters.working if masters is not None else model
    ddp = info.world > 1
    if ddp:
        runner = DistributedDataParallel(runner, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    accum = int(t["grad_accum"])
    sampler = StepBatchSampler(len(data.train), int(t["batch_size"]), start=step * accum,
                               rank=0 if data.rank_in_dataset else info.rank,
                               world_size=1 if data.rank_in_dataset else info.world,
                               shuffle=data.shuffle, seed=int(t["seed"]))
    loader_rng = torch.Generator().manual_seed(int(t["seed"]) * 1_000_003 + info.rank * 7919 + step)
    loader = DataLoader(data.train, batch_sampler=sampler, num_workers=int(t["num_workers"]),
                        collate_fn=collate_examples, generator=loader_rng,
                        pin_memory=info.device.type == "cuda", persistent_workers=False)
    params = [p for p in model.parameters() if p.requires_grad]
    if rng_to_restore is not None:
        state.restore_rng_state(rng_to_restore)  # last thing before the loop: nothing may draw after

    max_steps, max_minutes = int(t["max_steps"]), t["max_minutes"]
    fit_budget, first_step = bool(t["fit_schedule_to_minutes"]), step
    warned_warmup = False
    started = _clock()
    run_log = state.RunLog(exp_dir)
    window = {"time": 0.0, "steps": 0, "loss": torch.zeros((), device=info.device), "norm": 0.0}
    last_saved = step
    stopped = "max_steps"
    emit({"event": "start", "step": step, "max_steps": max_steps})
    batches = iter(loader)
    runner.train()
    while step < max_steps:
        tic = time.perf_counter()
        lr = scheduler.current_lr()
        optimizer.zero_grad(set_to_none=True)
        for micro in range(accum):
            batch = to_device(next(batches), info.device)
            sync = runner.no_sync() if ddp and micro < accum - 1 else contextlib.nullcontext()
            with sync:
                with autocast:
                    estimate = forward_batch(runner, batch)
                loss = losses.tse_loss(estimate.float(), batch, t["loss"], float(t["absent_floor_db"]))
                (loss / accum).backward()
            window["loss"] += loss.detach() / accum
        if masters is not None:
            masters.gradients_to_master()
        clip = float(t["grad_clip"]) if t["grad_clip"] else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
        if math.isfinite(grad_norm):
            optimizer.step()
            if masters is not None:
                masters.weights_to_working()
        else:
            logger.warning("step %d: non-finite gradient norm, update skipped", step + 1)
        scheduler.step()
        step += 1
        if average is not None:
            average.update(model, step)
        window["time"] += time.perf_counter() - tic
        window["steps"] += 1
        window["norm"] += grad_norm
        if fit_budget and step % int(t["log_every"]) == 0:
            planned = torch.tensor(float(steps_within_budget(step, step - first_step, _clock() - started,
                                                             60.0 * float(max_minutes), int(t["max_steps"]))),
                                   device=info.device)
            if ddp:
                dist.all_reduce(planned, op=dist.ReduceOp.MIN)  # every rank stops at the same step
            if int(planned.item()) != max_steps:
                max_steps = int(planned.item())
                scheduler.set_max_steps(max_steps)
                if max_steps <= scheduler.warmup_steps and not warned_warmup:
                    # shortening the warm-up now would jump the rate; say so instead
                    logger.warning("train.max_minutes fits only %d steps at this pace, within the %d warm-up "
                                   "steps: the run ends still warming up, the rate never decays; lower "
                                   "train.warmup_steps or raise train.max_minutes", max_steps, scheduler.warmup_steps)
                    warned_warmup = True

        stop = False
        if max_minutes is not None:
            flag = torch.tensor(float(_clock() - started > 60.0 * float(max_minutes)), device=info.device)
            if ddp:
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stop = bool(flag.item())
        record: dict[str, Any] = {}
        if step % int(t["log_every"]) == 0 or step == max_steps or stop:
            mean_loss = window["loss"] / window["steps"]
            if ddp:
                dist.all_reduce(mean_loss)
                mean_loss /= info.world
            examples = window["steps"] * accum * int(t["batch_size"]) * info.world
            record.update(step=step, loss=float(mean_loss), lr=lr, grad_norm=window["norm"] / window["steps"],
                          step_time=window["time"] / window["steps"],
                          examples_per_s=examples / max(window["time"], 1e-9),
                          **({"planned_max_steps": max_steps} if fit_budget else {}))
            window = {"time": 0.0, "steps": 0, "loss": torch.zeros((), device=info.device), "norm": 0.0}
        emit({"event": "step", "step": step, "lr": lr, "grad_norm": grad_norm, **record})
        dev_metrics = None
        if data.dev and t["dev_every"] and (step % int(t["dev_every"]) == 0 or step == max_steps or stop):
            if average is not None and t["ema_dev_raw"]:
                raw_metrics = evaluate_dev(model, data.dev, info.device, autocast, info)
                record.update({f"dev_raw_{k}": v for k, v in raw_metrics.items()})
            with average.swapped_in(model) if average is not None else contextlib.nullcontext():
                dev_metrics = evaluate_dev(model, data.dev, info.device, autocast, info)
            record.update({"step": step, **{f"dev_{k}": v for k, v in dev_metrics.items()}})
            emit({"event": "dev", "step": step, **dev_metrics})
        if record and info.main:
            run_log.append({"time": time.time(), **record})
        if step % int(t["save_every"]) == 0 or step == max_steps or stop:
            best = _save(exp_dir, step, model, optimizer, scheduler, dev_metrics, best, t, info, emit, average)
            last_saved = step
        if stop:
            stopped = "max_minutes"
            logger.info("wall-clock budget of %s min used up at step %d: stopped", max_minutes, step)
            break
    if step != last_saved:
        best = _save(exp_dir, step, model, optimizer, scheduler, None, best, t, info, emit, average)
    if average is not None:  # the caller gets what the run ships: the average
        model.load_state_dict(average.state_dict())
    emit({"event": "end", "step": step, "stopped": stopped, "best": best})
    return TrainResult(step=step, stopped=stopped, best=best, model=model, exp_dir=exp_dir)


def _save(exp_dir: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
          scheduler: WarmupDecay, dev_metrics: dict[str, Any] | None, best: dict[str, Any] | None,
          t: dict[str, Any], info: Dist, emit: Callback,
          average: WeightAverage | None = None) -> dict[str, Any] | None:
    rng = state.capture_rng_state()
    rngs: list[Any] = [rng]
    if info.world > 1:
        rngs = [None] * info.world
        dist.all_gather_object(rngs, rng)
    if info.main:
        train_state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                       "rng": rngs, "world_size": info.world,
                       "data": {"micro_batches": step * int(t["grad_accum"]), "batch_size": int(t["batch_size"])}}
        meta = {"step": step, "dev": dev_metrics, "time": time.time(), "model": model.name}
        # a scale-dependent loss trains the output level too: the extractor then keeps it
        extra = {"output_level": "calibrated"} if t["loss"] in losses.LEVEL_TRAINING else None
        if average is not None:
            train_state["raw_weights"] = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}

        def save_model(directory: Path) -> None:
            with average.swapped_in(model) if average is not None else contextlib.nullcontext():
                save_pretrained(model, directory, extra)

        path = state.save_checkpoint(exp_dir, step, save_model, train_state, meta)
        score = state.dev_score(meta)
        if score is not None and (best is None or score > float(best["si_sdr_imp"])):
            best = {"step": step, **dev_metrics}
            state.update_best(exp_dir, path, best)
        state.prune_checkpoints(exp_dir, int(t["keep_last_k"]), int(t["keep_best_k"]))
        emit({"event": "checkpoint", "step": step, "path": str(path), "best": best})
    info.barrier()
    return best
