"""egs/libri2mix/run.sh end to end on a tiny fake LibriMix tree (CPU, tiny model)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "egs" / "libri2mix" / "run.sh"
SR = 8000
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="the recipe needs bash")

# three speakers, two utterances each: every target has another utterance of its speaker
MIXTURES = {
    "train-100": [("11-1-1", "22-1-1"), ("22-1-2", "33-1-1"), ("33-1-2", "11-1-2")],
    "dev": [("44-1-1", "55-1-1"), ("55-1-2", "66-1-1"), ("66-1-2", "44-1-2")],
    "test": [("77-1-1", "88-1-1"), ("88-1-2", "99-1-1"), ("99-1-2", "77-1-2")],
}


def _voice(utterance: str, seconds: float) -> np.ndarray:
    speaker, _, index = utterance.split("-")
    rng = np.random.default_rng(int(speaker) * 10 + int(index))
    t = np.arange(int(seconds * SR)) / SR
    f0 = 90.0 + 3.0 * int(speaker)
    tone = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6)) / h for h in range(1, 6))
    return (0.1 * tone * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def fake_librimix(root: Path, noisy: bool = False) -> Path:
    """ROOT/wav8k/min/{metadata,<split>/{mix_clean,s1,s2}} with LibriMix's CSV columns;
    ``noisy``: {mix_both,s1,s2,noise} and a ``noise_path`` column instead."""
    base = root / "wav8k" / "min"
    (base / "metadata").mkdir(parents=True)
    mix_type = "mix_both" if noisy else "mix_clean"
    for split, pairs in MIXTURES.items():
        rows = []
        for k, (a, b) in enumerate(pairs):
            mixture_id = f"{a}_{b}"
            length = 1.0 + 0.25 * k
            s1, s2 = _voice(a, length), _voice(b, length)
            noise = 0.01 * np.random.default_rng(k).standard_normal(len(s1)).astype(np.float32)
            waves = [("s1", s1), ("s2", s2)] + ([("noise", noise), (mix_type, s1 + s2 + noise)] if noisy
                                                else [(mix_type, s1 + s2)])
            paths = {}
            for folder, wave in waves:
                path = base / split / folder / f"{mixture_id}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                soundfile.write(str(path), wave, SR, subtype="PCM_16")
                paths[folder] = str(path.relative_to(root))
            row = {"mixture_ID": mixture_id, "mixture_path": paths[mix_type],
                   "source_1_path": paths["s1"], "source_2_path": paths["s2"]}
            if noisy:
                row["noise_path"] = paths["noise"]
            rows.append({**row, "length": len(s1)})
        with open(base / "metadata" / f"mixture_{split}_{mix_type}.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return root


def _run(args: list, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "OMP_NUM_THREADS": "1", "python": sys.executable, **env}
    return subprocess.run(["bash", str(RUN), *args], env=full, capture_output=True, text=True,
                          timeout=300, check=False, cwd=cwd)


def test_libri2mix_recipe_all_stages(tmp_path):
    root = fake_librimix(tmp_path / "Libri2Mix")
    exp = tmp_path / "exp"
    done = _run([], librimix_root=str(root), conf="conf/tiny.yaml", ngpu="0", exp=str(exp),
                n_average="2", eval_opts="--no-pesq --no-estimates")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    summary = json.loads((exp / "data_summary.json").read_text())
    assert summary["mixtures"] == 3 and summary["speakers"] == 3 and summary["missing_files"] == 0
    assert summary["dev_items"] == 4
    assert len((exp / "dev_enrollment.csv").read_text().splitlines()) == 1 + 6  # header + 3 mixtures x 2
    assert [p.name for p in (exp / "checkpoints").iterdir()] != []
    assert (exp / "average_best2" / "model.safetensors").is_file()
    results = json.loads((exp / "eval_test" / "summary.json").read_text())
    assert results["n_items"] == 6  # both talkers of the 3 test mixtures
    table = (exp / "RESULTS.md").read_text()
    assert "| si_sdr_imp |" in table and "items: 6" in table


def test_recipe_rejects_bad_arguments_and_broken_data(tmp_path):
    done = _run(["--no_such_variable", "1"])
    assert done.returncode == 2 and "usage" in done.stderr
    done = _run(["--stage", "0", "--stop_stage", "0"], librimix_root="")
    assert done.returncode == 2 and "librimix_root" in done.stderr
    root = fake_librimix(tmp_path / "Libri2Mix")
    next((root / "wav8k" / "min" / "train-100" / "s2").iterdir()).unlink()
    done = _run(["--stage", "0", "--stop_stage", "0"], librimix_root=str(root), conf="conf/tiny.yaml",
                ngpu="0", exp=str(tmp_path / "exp"))
    assert done.returncode == 2 and "missing" in done.stderr


def test_stage4_uses_the_given_test_enrollment_list(tmp_path):
    """test_enrollment (relative to the caller's folder) reaches usef eval as --enrollment."""
    root = fake_librimix(tmp_path / "Libri2Mix")
    exp = tmp_path / "exp"
    (exp / "average_best2").parent.mkdir(parents=True)
    (exp / "average_best2").symlink_to(REPO / "pretrained" / "usef-conformer-8k", target_is_directory=True)
    # a hand-made list: each target's reference is its speaker's source in another test mixture
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "test_enrollment.csv").write_text(
        "mixture_ID,target_index,reference_path\n"
        "77-1-1_88-1-1,0,wav8k/min/test/s2/99-1-2_77-1-2.wav\n77-1-1_88-1-1,1,wav8k/min/test/s1/88-1-2_99-1-1.wav\n"
        "88-1-2_99-1-1,0,wav8k/min/test/s2/77-1-1_88-1-1.wav\n88-1-2_99-1-1,1,wav8k/min/test/s1/99-1-2_77-1-2.wav\n"
        "99-1-2_77-1-2,0,wav8k/min/test/s2/88-1-2_99-1-1.wav\n99-1-2_77-1-2,1,wav8k/min/test/s1/77-1-1_88-1-1.wav\n")
    common = {"librimix_root": str(root), "ngpu": "0", "exp": str(exp), "n_average": "2",
              "eval_opts": "--no-pesq --no-estimates"}
    done = _run(["--stage", "4", "--stop_stage", "4", "--test_enrollment", "lists/test_enrollment.csv"],
                cwd=tmp_path, **common)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "enrollment: " + str(lists / "test_enrollment.csv") in done.stdout
    summary = json.loads((exp / "eval_test" / "summary.json").read_text())
    assert summary["data"]["enrollment"] == str(lists / "test_enrollment.csv") and summary["n_items"] == 6
    assert not (exp / "eval_test" / "enrollment.csv").exists()  # no seeded list drawn
    done = _run(["--stage", "4", "--stop_stage", "4", "--test_enrollment", "nowhere.csv"], cwd=tmp_path, **common)
    assert done.returncode == 2 and "test_enrollment" in done.stderr and "no such file" in done.stderr


def _stage0(root: Path, exp: Path, **env: str) -> subprocess.CompletedProcess:
    return _run(["--stage", "0", "--stop_stage", "0"], librimix_root=str(root), conf="conf/tiny.yaml",
                ngpu="0", exp=str(exp), **env)


def test_stage0_checks_noise_files_of_mix_both(tmp_path):
    root = fake_librimix(tmp_path / "Libri2Mix", noisy=True)
    done = _stage0(root, tmp_path / "exp_ok", mix_type="mix_both")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    # the first training mixture's noise: stage 0 decodes that row, and the data layer names the
    # missing file instead of letting a raw decoder error escape as a traceback
    noise = root / "wav8k" / "min" / "train-100" / "noise" / "11-1-1_22-1-1.wav"
    noise.unlink()
    done = _stage0(root, tmp_path / "exp_first", mix_type="mix_both")
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-4000:]
    assert str(noise) in done.stderr  # named by the file listing (or by the decoder's check)
    assert "Traceback" not in done.stderr


def test_stage0_lists_every_missing_noise_file(tmp_path):
    root = fake_librimix(tmp_path / "Libri2Mix", noisy=True)
    # a noise file of a row stage 0 does not decode: only the file listing can catch it
    noise = root / "wav8k" / "min" / "train-100" / "noise" / "33-1-2_11-1-2.wav"
    noise.unlink()
    done = _stage0(root, tmp_path / "exp", mix_type="mix_both")
    assert done.returncode == 2 and "missing" in done.stderr and str(noise) in done.stderr


def _speaker_folders(root: Path) -> Path:
    """Five speakers of two 2 s utterances each: ``root/<speaker>/<utterance>.wav``."""
    for s in range(5):
        for u in range(2):
            path = root / f"spk{s}" / f"u{u}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(str(path), _voice(f"{s + 1}-1-{u + 1}", 2.0) * (1 + s), SR)
    return root


def _speakers_recipe(tmp_path: Path, *options: str) -> tuple[subprocess.CompletedProcess, Path]:
    """egs/speakers/run.sh with the tiny config on CPU, on :func:`_speaker_folders`; (result, exp)."""
    speech = _speaker_folders(tmp_path / "speech")
    exp = tmp_path / "exp"
    done = subprocess.run(
        ["bash", str(REPO / "egs" / "speakers" / "run.sh"), "--conf", "egs/speakers/conf/tiny.yaml",
         "--speech", str(speech), "--ngpu", "0", "--exp", str(exp), *options],
        env={**os.environ, "OMP_NUM_THREADS": "1", "python": sys.executable}, cwd=REPO,
        capture_output=True, text=True, timeout=300, check=False)
    return done, exp


def test_speakers_recipe_all_stages(tmp_path):
    done, exp = _speakers_recipe(tmp_path, "--n_average", "2", "--eval_items", "4",
                                 "--eval_opts", "--no-pesq --no-estimates")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert json.loads((exp / "data_summary.json").read_text())["speakers"] == 3  # 2 of 5 held out
    heldout = (exp / "heldout" / "eval.csv").read_text().splitlines()
    assert heldout[0] == "id,mixture,reference,target,interferer" and len(heldout) == 5
    assert json.loads((exp / "eval_heldout" / "summary.json").read_text())["n_items"] == 4
    assert "| si_sdr_imp |" in (exp / "RESULTS.md").read_text()


def test_speakers_recipe_trains_on_several_cpu_processes(tmp_path):
    """``--ngpu 0 --ncpu 2``: stage 2 runs two one-thread processes (torchrun, gloo)."""
    from usef.train import state

    done, exp = _speakers_recipe(tmp_path, "--ncpu", "2", "--stage", "2", "--stop_stage", "2",
                                 "--train_opts", "train.max_steps=2 train.dev_every=2")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    saved = state.load_train_state(exp / "checkpoints" / "step_2")
    assert saved["world_size"] == 2 and len(saved["rng"]) == 2
    assert "threads: 1" in (exp / "train_config.yaml").read_text()
