"""Trainer: learning, exact resume after SIGKILL, DDP agreement, averaging, schedule, state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from usef.checkpoint import load_pretrained
from usef.data import SpeakerCorpus, write_pack
from usef.train import state
from usef.train import trainer as trainer_module
from usef.train.average import average_best, select_checkpoints
from usef.train.data import StepBatchSampler
from usef.train.schedule import WarmupDecay, lr_at, steps_within_budget
from usef.train.trainer import apply_overrides, resolve_config, train

REPO = Path(__file__).resolve().parents[1]
SR = 8000
# A subprocess that trains and dumps its rank's parameters; with KILL_AT it SIGKILLs itself
# right after that step (past its last checkpoint), like a crashed or pre-empted job.
WORKER = """
import os, signal, sys
import torch
torch.set_num_threads(1)
from safetensors.torch import save_file
from usef.train.trainer import load_config, train
config, exp, kill_at, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
def callback(event):
    if kill_at and event["event"] == "step" and event["step"] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
result = train(load_config(config), exp, callback=callback)
state = {k: v.detach().contiguous() for k, v in result.model.state_dict().items()}
save_file(state, os.path.join(out, "rank%s.safetensors" % os.environ.get("RANK", "0")))
"""


def _speech_pack(path: Path) -> Path:
    """Six synthetic 'speakers': harmonic complexes with their own pitch and tremolo."""
    rng = np.random.default_rng(0)
    speakers = {}
    for s in range(6):
        clips = []
        for u in range(3):
            t = np.arange(int(2.5 * SR)) / SR
            f0 = (100 + 40 * s) * (1 + 0.02 * u)
            tone = sum(np.sin(2 * np.pi * f0 * (h + 1) * t + rng.uniform(0, 6)) / (h + 1) for h in range(4))
            tremolo = 0.6 + 0.4 * np.sin(2 * np.pi * (2 + 0.5 * s) * t)
            clips.append((0.3 * tone * tremolo).astype(np.float32))
        speakers[f"spk{s}"] = clips
    write_pack(path, SpeakerCorpus.from_arrays(speakers, SR))
    return path


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> Path:
    return _speech_pack(tmp_path_factory.mktemp("data") / "speech.npz")


def _config(pack: Path, **train) -> dict:
    return {
        "model": {"name": "usef_conformer", "args": {"preset": "tiny"}},
        "data": {
            "type": "dynamic_mix", "speech": str(pack), "dev_speakers": 2,
            "mix": {"reference_seconds": [0.6, 1.0], "min_reference_seconds": 0.5, "min_target_seconds": 0.5},
        },
        "train": {"batch_size": 2, "segment_seconds": 0.5, "lr": 3e-3, "warmup_steps": 2, "max_steps": 6,
                  "num_workers": 0, "log_every": 1, "dev_every": 0, "seed": 7, **train},
        "dev": {"n_items": 4, "batch_size": 2},
    }


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _run_group(cmd: list, timeout: float) -> tuple:
    """Run ``cmd`` in its own session; on timeout kill the whole group (no orphaned ranks)."""
    proc = subprocess.Popen(cmd, env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        pytest.fail(f"{cmd[:4]} timed out after {timeout} s: {err[-2000:]}")
    return proc.returncode, err


def _write(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- learning
def test_overfits_one_batch(pack, tmp_path, one_thread):
    # a two-example dataset: every step sees the same batch
    config = _config(pack, max_steps=30, lr=5e-3, decay="constant", dev_every=30)
    config["data"]["mix"]["length"] = 2
    rng_before = torch.get_rng_state()
    result = train(config, tmp_path / "exp")
    log = state.RunLog(tmp_path / "exp").records()
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 30
    assert np.mean(losses[-3:]) < losses[0] - 3.0, losses  # >= 3 dB SI-SDR gained
    assert result.step == 30 and result.stopped == "max_steps"
    assert torch.equal(torch.get_rng_state(), rng_before)  # the trainer leaves global RNGs alone
    # dev ran at the end: metrics logged, best/ written as a loadable model folder
    assert result.best is not None and result.best["n"] == 4
    assert json.loads((tmp_path / "exp" / "best.json").read_text())["step"] == 30
    best = load_pretrained(tmp_path / "exp" / "best").state_dict()
    trained = result.model.state_dict()
    assert all(torch.equal(best[k], trained[k]) for k in trained)


def test_init_from_weights_strict_and_partial(pack, tmp_path, one_thread, caplog):
    source = train(_config(pack, max_steps=2), tmp_path / "src").model.state_dict()
    folder = tmp_path / "src" / "checkpoints" / "step_2"
    # no training state in the new run: --resume falls back to the committed weights
    config = _config(pack, max_steps=1, lr=1e-12, warmup_steps=0)
    config["init_from"] = str(folder)
    same = train(config, tmp_path / "same", resume=True).model.state_dict()
    assert all(torch.allclose(same[k], source[k], atol=1e-9) for k in source)
    # a model with other STFT bins: strict fails, strict=false loads what fits
    config["model"]["args"].update(n_fft=128, hop_length=64)
    with pytest.raises(ValueError, match="do not match"):
        train(config, tmp_path / "strict")
    config["init_from"] = {"path": str(folder), "strict": False}
    with caplog.at_level("INFO"):
        wide = train(config, tmp_path / "partial").model.state_dict()
    fits = [k for k in wide if wide[k].shape == source[k].shape]
    assert 0 < len(fits) < len(wide)
    assert all(torch.allclose(wide[k], source[k], atol=1e-9) for k in fits)
    assert "left" in caplog.text and "at random" in caplog.text


def test_calibrate_output_gain_scales_only_the_output_layer_of_a_fresh_run(pack, tmp_path, one_thread):
    train(_config(pack, max_steps=2), tmp_path / "src")
    folder = tmp_path / "src" / "checkpoints" / "step_2"
    source = load_pretrained(folder).state_dict()
    config = _config(pack, max_steps=1, lr=1e-12, warmup_steps=0, calibrate_output_gain=True)
    config["init_from"] = str(folder)
    tuned = train(config, tmp_path / "cal").model.state_dict()
    ratio = tuned["separator.output.weight"] / source["separator.output.weight"]
    gain = ratio.flatten()[0]
    assert abs(float(gain) - 1.0) > 1e-3 and torch.allclose(ratio, gain.expand_as(ratio), rtol=1e-4)
    assert torch.allclose(tuned["separator.output.bias"], gain * source["separator.output.bias"], rtol=1e-4)
    assert all(torch.allclose(tuned[k], source[k], atol=1e-9) for k in source if not k.startswith("separator.output."))
    # a resumed run keeps its trained gain: no second calibration
    config["train"]["max_steps"] = 2
    resumed = train(config, tmp_path / "cal", resume=True).model.state_dict()
    assert torch.allclose(resumed["separator.output.weight"], tuned["separator.output.weight"], atol=1e-9)


def test_max_minutes_stops_with_a_checkpoint_and_resume_finishes(pack, tmp_path, one_thread, caplog):
    exp = tmp_path / "exp"
    stopped = train(_config(pack, max_steps=5, max_minutes=1e-9), exp)
    assert stopped.stopped == "max_minutes" and stopped.step == 1
    assert [p.name for p in state.list_checkpoints(exp)] == ["step_1"]
    with caplog.at_level("WARNING"):
        finished = train(_config(pack, max_steps=5), exp, resume=True)
    assert finished.step == 5 and finished.stopped == "max_steps"
    assert "changed config sections ['train']" in caplog.text
    assert [r["step"] for r in state.RunLog(exp).records()] == [1, 2, 3, 4, 5]


class _FakeClock:
    """A wall clock that advances ``tick`` seconds each time it is read."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


@pytest.mark.parametrize("fit", [False, True])
def test_fit_schedule_to_minutes_ends_the_decay_inside_the_budget(pack, tmp_path, one_thread, monkeypatch, fit):
    # the GPU window of 2026-12-04: max_steps from a pilot's optimistic pace, the clock stopped the
    # run with the cosine half done and the rate still high; fitting the plan to the pace ends it
    clock = _FakeClock(1.0)  # read once a step for the budget, once more per step when fitting
    monkeypatch.setattr(trainer_module, "_clock", clock)
    config = _config(pack, max_steps=1000, warmup_steps=2, max_minutes=1.0, lr=1e-3, min_lr=1e-6,
                     fit_schedule_to_minutes=fit)
    result = train(config, tmp_path / "exp")
    records = state.RunLog(tmp_path / "exp").records()
    last_lr = records[-1]["lr"]
    if not fit:
        assert result.stopped == "max_minutes" and last_lr > 0.9e-3  # cut off near the peak
        return
    assert result.stopped == "max_steps" and 20 <= result.step < 1000
    assert clock.now < 60.0  # ended by its own plan, before the clock would have stopped it
    assert last_lr < 0.02e-3  # the cosine ran to (nearly) its floor
    assert records[-1]["planned_max_steps"] == result.step


def test_a_budget_shorter_than_the_warm_up_is_reported(pack, tmp_path, one_thread, monkeypatch, caplog):
    # seen in a 30 s smoke run of a GPU config: the fitted plan ended inside the warm-up, so the
    # rate rose until the clock stopped it and never decayed, silently
    monkeypatch.setattr(trainer_module, "_clock", _FakeClock(1.0))
    config = _config(pack, max_steps=1000, warmup_steps=500, max_minutes=0.5, fit_schedule_to_minutes=True)
    with caplog.at_level("WARNING"):
        result = train(config, tmp_path / "exp")
    assert result.step < 500
    assert caplog.text.count("the run ends still warming up") == 1


def test_fit_schedule_to_minutes_needs_a_budget(pack):
    with pytest.raises(ValueError, match="fit_schedule_to_minutes needs train.max_minutes"):
        resolve_config(_config(pack, fit_schedule_to_minutes=True))


def test_steps_within_budget_known_answers():
    # 50 steps took 100 s: 2 s a step; 300 s budget with no margin leaves 100 more steps
    assert steps_within_budget(50, 50, 100.0, 300.0, 10_000, margin=1.0) == 150
    assert steps_within_budget(50, 50, 100.0, 300.0, 120, margin=1.0) == 120  # never past max_steps
    assert steps_within_budget(50, 50, 400.0, 300.0, 10_000) == 50  # over budget: stop now
    assert steps_within_budget(70, 20, 40.0, 300.0, 10_000, margin=0.9) == 70 + (270 - 40) // 2  # resumed at 50
    assert steps_within_budget(5, 0, 0.0, 300.0, 99) == 99  # no pace yet: keep the plan


# --------------------------------------------------------------------------- exact resume
def test_resume_after_sigkill_is_bitwise_exact(pack, tmp_path):
    config = _config(pack, max_steps=8, save_every=3, grad_accum=2)
    config["model"]["args"]["separator_args"] = {"dropout": 0.1}  # the RNG state matters
    cfg_path = _write(tmp_path / "c.yaml", config)
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    jobs = []
    for exp, kill_at in (("a", 0), ("b", 5)):  # b is killed after step 5: its last checkpoint is step 3
        (tmp_path / exp).mkdir()
        jobs.append(subprocess.Popen([sys.executable, str(worker), str(cfg_path), str(tmp_path / exp),
                                      str(kill_at), str(tmp_path / exp)], env=_env(), cwd=REPO))
    try:
        codes = [job.wait(timeout=120) for job in jobs]
    finally:
        for job in jobs:
            if job.poll() is None:
                job.kill()
    assert codes == [0, -signal.SIGKILL]
    assert [p.name for p in state.list_checkpoints(tmp_path / "b")] == ["step_3"]
    # the kill came before step 5 was logged: step 4 is logged past the checkpoint
    assert max(r["step"] for r in state.RunLog(tmp_path / "b").records()) == 4
    code, err = _run_group([sys.executable, "-m", "usef.bin.train", str(cfg_path), "--exp-dir",
                            str(tmp_path / "b"), "--resume", "--quiet"], timeout=120)
    assert code == 0, err
    a = load_file(str(tmp_path / "a" / "checkpoints" / "step_8" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "checkpoints" / "step_8" / "model.safetensors"))
    assert set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    initial = load_file(str(tmp_path / "a" / "checkpoints" / "step_3" / "model.safetensors"))
    assert not all(torch.equal(a[k], initial[k]) for k in a)  # training did move the weights
    steps = [r["step"] for r in state.RunLog(tmp_path / "b").records()]
    assert steps == list(range(1, 9))  # steps 4-5 of the killed run were dropped from the log
    saved = state.load_train_state(tmp_path / "b" / "checkpoints" / "step_8")
    assert saved["step"] == 8 and saved["scheduler"]["last_step"] == 8


# --------------------------------------------------------------------------- DDP
def train_two_ranks(config: dict, tmp_path: Path) -> tuple[dict, dict]:
    """Train ``config`` under torchrun with two CPU processes into ``tmp_path / "exp"``; each
    rank's final parameters."""
    cfg_path = _write(tmp_path / "c.yaml", config)
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    code, err = _run_group([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                            str(worker), str(cfg_path), str(tmp_path / "exp"), "0", str(tmp_path)], timeout=120)
    assert code == 0, err[-3000:]
    return load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))


def test_two_process_ddp_ranks_agree(pack, tmp_path):
    r0, r1 = train_two_ranks(_config(pack, max_steps=3), tmp_path)
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    saved = load_file(str(tmp_path / "exp" / "checkpoints" / "step_3" / "model.safetensors"))
    assert all(torch.equal(r0[k], saved[k]) for k in r0)
    assert state.load_train_state(tmp_path / "exp" / "checkpoints" / "step_3")["world_size"] == 2
    assert len(state.load_train_state(tmp_path / "exp" / "checkpoints" / "step_3")["rng"]) == 2


# --------------------------------------------------------------------------- averaging
def test_average_best_is_the_mean_of_the_best_checkpoints(pack, tmp_path, one_thread):
    exp = tmp_path / "exp"
    train(_config(pack, max_steps=4, save_every=1, keep_last_k=10), exp)
    ckpts = state.list_checkpoints(exp)
    scores = [3.0, 1.0, 4.0, 2.0]  # pretend dev results: best are step_3, step_1
    for path, score in zip(ckpts, scores):
        (path / state.META_FILE).write_text(json.dumps({"step": 0, "dev": {"si_sdr_imp": score}}))
    assert [c.name for c in select_checkpoints(exp, best=2)] == ["step_3", "step_1"]
    code, err = _run_group([sys.executable, "-m", "usef.bin.average", str(exp), "--best", "2"], timeout=60)
    assert code == 0, err
    out = load_file(str(exp / "average_best2" / "model.safetensors"))
    w1 = load_file(str(ckpts[0] / "model.safetensors"))
    w3 = load_file(str(ckpts[2] / "model.safetensors"))
    moved = 0
    for key, value in out.items():
        expected = ((w1[key].double() + w3[key].double()) / 2).to(value.dtype)
        assert torch.allclose(value, expected, rtol=1e-6, atol=1e-7), key
        moved += not torch.equal(w1[key], w3[key])
    assert moved > 0  # the checkpoints differ, so the mean is not a copy of one
    assert "averaged" in yaml.safe_load((exp / "average_best2" / "config.yaml").read_text())
    with pytest.raises(ValueError, match="no checkpoint"):
        average_best(tmp_path / "nothing", best=2)


def test_keep_last_k_keeps_the_best_too(tmp_path):
    exp = tmp_path / "exp"
    for step, score in [(1, 5.0), (2, 1.0), (3, 2.0), (4, 0.5), (5, 0.1)]:
        d = exp / "checkpoints" / f"step_{step}"
        d.mkdir(parents=True)
        (d / state.STATE_FILE).write_bytes(b"x")
        (d / state.META_FILE).write_text(json.dumps({"dev": {"si_sdr_imp": score}}))
    state.prune_checkpoints(exp, keep_last=2, keep_best=1)
    assert [p.name for p in state.list_checkpoints(exp)] == ["step_1", "step_4", "step_5"]


# --------------------------------------------------------------------------- pieces
def test_schedule_warmup_then_decay():
    assert lr_at(0, 1.0, 4, 104) == pytest.approx(0.25)
    assert lr_at(3, 1.0, 4, 104) == pytest.approx(1.0)
    assert lr_at(54, 1.0, 4, 104, "cosine", 0.0) == pytest.approx(0.5)  # half-way down the cosine
    assert lr_at(104, 1.0, 4, 104, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_at(54, 1.0, 4, 104, "exponential", 0.01) == pytest.approx(0.1)  # geometric mid-point
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=2e-3)
    sched = WarmupDecay(opt, 2e-3, 2, 10)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)
    sched.step()
    again = WarmupDecay(opt, 2e-3, 2, 10)
    again.load_state_dict(sched.state_dict())
    assert opt.param_groups[0]["lr"] == pytest.approx(2e-3)
    with pytest.raises(ValueError, match="decay"):
        lr_at(0, 1.0, 0, 10, "linear")


def test_sampler_resumes_mid_stream_and_splits_ranks():
    full = iter(StepBatchSampler(10, 3, shuffle=True, seed=1))
    stream = [next(full) for _ in range(8)]
    later = iter(StepBatchSampler(10, 3, start=5, shuffle=True, seed=1))
    assert [next(later) for _ in range(3)] == stream[5:]
    first_epoch = sorted(i for batch in stream[:3] for i in batch)[:9]
    assert len(set(first_epoch)) == 9 and max(first_epoch) < 10  # a permutation, no repeats
    assert all(10 <= i < 20 for i in stream[4])  # epoch 1 indices carry the epoch
    r0 = next(iter(StepBatchSampler(100, 2, rank=0, world_size=2)))
    r1 = next(iter(StepBatchSampler(100, 2, rank=1, world_size=2)))
    assert r0 == [0, 1] and r1 == [2, 3]


def test_rng_state_roundtrip_through_weights_only_file(tmp_path):
    import random

    saved = state.capture_rng_state()
    torch.save(saved, tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1))
    state.restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(1), expected[2])


def test_overrides_and_config_errors():
    cfg = apply_overrides({"train": {"lr": 1.0}}, ["train.lr=3e-4", "data.mix.sir_range=[-5, 5]", "x.name=nan"])
    assert cfg["train"]["lr"] == 3e-4 and cfg["data"]["mix"]["sir_range"] == [-5, 5]
    assert cfg["x"]["name"] == "nan"  # only numbers in scientific notation are coerced
    base = {"model": {"name": "usef_conformer"}, "data": {"type": "dynamic_mix"}}
    with pytest.raises(ValueError, match="train_steps"):
        resolve_config({**base, "train": {"train_steps": 3}})
    with pytest.raises(ValueError, match="train.loss"):
        resolve_config({**base, "train": {"loss": "l1"}})
    assert resolve_config({**base, "init_from": "x"})["init_from"] == {"path": "x", "strict": True}
    with pytest.raises(ValueError, match="override"):
        apply_overrides({}, ["novalue"])


def test_a_band_ensemble_trains_its_wide_member_and_writes_its_dev_set(pack, tmp_path, one_thread):
    # the 16 kHz default's recipe (egs/speakers/conf/cpu_usef_conformer_16k_ensemble.yaml) in small:
    # the trainer and its data tools must know the ensemble's rate (its wide member's)
    tiny = {"encoder_channels": 4, "attention_heads": 2, "attention_qk_channels": 2, "separator_args":
            {"dim": 16, "num_layers": 1, "num_heads": 2, "ffn_dim": 32, "kernel_size": 3, "dropout": 0.0}}
    config = _config(pack, max_steps=2)
    config["model"] = {"name": "band_ensemble", "args": {
        "wide": {"model": "usef_conformer", "args": {"sample_rate": 8000, "n_fft": 64, "hop_length": 32, **tiny}},
        "narrow": {"model": "usef_conformer", "args": {"sample_rate": 4000, "n_fft": 32, "hop_length": 16, **tiny}},
        "narrow_weight": 0.5, "freeze_narrow": True}}
    assert trainer_module.write_dev_set(config, tmp_path / "dev").is_file()
    assert trainer_module.prepare_data(config, tmp_path / "prep")["missing_files"] == 0
    result = train(config, tmp_path / "exp")
    assert result.step == 2 and not any(p.requires_grad for p in result.model.narrow.parameters())
    loaded = load_pretrained(tmp_path / "exp" / "checkpoints" / "step_2")
    assert loaded.sample_rate == 8000 and loaded.config["freeze_narrow"] is True
