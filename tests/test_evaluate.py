"""usef.evaluate and the `usef eval` command on synthetic WAV files."""

import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

import usef
from usef.bin import eval as eval_cli
from usef.data.librimix import (
    Enrollment,
    make_enrollment_list,
    metadata_path,
    read_enrollment_list,
    read_metadata,
    write_enrollment_list,
)
from usef.data.librimix_dataset import Libri2MixTSE
from usef.evaluate import evaluate_list, read_eval_list

SR = 8000


def _speech_like(seconds: float = 1.5, f0: float = 140.0) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    phase = 2 * np.pi * np.cumsum(f0 + 30 * np.sin(2 * np.pi * 0.7 * t)) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 17))
    return 0.3 * x * np.sqrt(np.clip(np.sin(2 * np.pi * 3.0 * t), 0, None)) / np.abs(x).max()


def _orthogonal(target: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """Noise orthogonal to the zero-mean target at ``snr_db`` (SI-SDR of target + noise)."""
    noise = np.random.default_rng(seed).standard_normal(target.size)
    noise -= noise.mean()
    tgt = target - target.mean()
    noise -= np.dot(noise, tgt) / np.dot(tgt, tgt) * tgt
    return noise * np.sqrt(np.dot(tgt, tgt) / np.dot(noise, noise) / 10 ** (snr_db / 10))


def _write(path: Path, wave: np.ndarray, rate: int = SR) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave.astype(np.float32), rate, subtype="FLOAT")
    return str(path)


class _Oracle:
    """extract_fn returning a prepared estimate per mixture; raises for unknown mixtures."""

    def __init__(self):
        self.estimates = {}
        self.rates = []

    def __call__(self, mixture, reference, sample_rate):
        self.rates.append(sample_rate)
        key = mixture.astype(np.float32).tobytes()
        if key not in self.estimates:
            raise RuntimeError("model exploded")
        return self.estimates[key]


@pytest.fixture
def dataset(tmp_path):
    """Five items: improved, degraded, confused, missing target file, extractor error."""
    oracle = _Oracle()
    items = []
    plans = {"good": 0.5, "worse": 1.5, "confused": None, "missing": 0.5, "raises": None}
    for seed, (name, gain) in enumerate(plans.items()):
        target = _speech_like(f0=120 + 10 * seed)
        interferer = _orthogonal(target, 5.0, seed)  # input SI-SDR 5 dB
        mixture = (target + interferer).astype(np.float32)
        item = {
            "id": name,
            "mixture": _write(tmp_path / "wav" / f"{name}_mix.wav", mixture),
            "reference": _write(tmp_path / "wav" / f"{name}_ref.wav", _speech_like(1.0, f0=125 + 10 * seed)),
            "target": _write(tmp_path / "wav" / f"{name}_tgt.wav", target),
            "interferer": _write(tmp_path / "wav" / f"{name}_itf.wav", interferer),
        }
        if name == "missing":
            item["target"] = str(tmp_path / "wav" / "nope.wav")
        if name != "raises":
            estimate = interferer + 0.1 * target if gain is None else target + gain * interferer
            oracle.estimates[mixture.tobytes()] = estimate.astype(np.float32)
        items.append(item)
    return items, oracle


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_evaluate_list_writes_metrics_failures_and_summary(dataset, tmp_path):
    items, oracle = dataset
    out = tmp_path / "out"
    progress = []
    summary = evaluate_list(items, oracle, out, with_pesq=True,
                            progress=lambda d, n, row: progress.append((d, n, row["id"])),
                            metadata={"model": {"name": "oracle", "sample_rate": SR}})
    assert progress[-1] == (5, 5, "raises")
    rows = {row["id"]: row for row in _read_csv(out / "metrics.csv")}
    assert list(_read_csv(out / "metrics.csv")[0]) == [
        "id", "input_si_sdr", "si_sdr", "si_sdr_imp", "sdr", "sdr_imp", "pesq", "stoi", "level_db",
        "peak", "mixture_peak", "si_sdr_interferer", "confused", "error"]
    gain_db = 20 * math.log10(2.0)  # interferer halved: +6.02 dB
    assert float(rows["good"]["input_si_sdr"]) == pytest.approx(5.0, abs=0.01)
    assert float(rows["good"]["si_sdr_imp"]) == pytest.approx(gain_db, abs=0.01)
    assert float(rows["worse"]["si_sdr_imp"]) == pytest.approx(-20 * math.log10(1.5), abs=0.01)
    assert rows["confused"]["confused"] == "True" and rows["good"]["confused"] == "False"
    assert float(rows["good"]["pesq"]) > float(rows["worse"]["pesq"])
    assert "FileNotFoundError" in rows["missing"]["error"] and "nope.wav" in rows["missing"]["error"]
    assert "model exploded" in rows["raises"]["error"]
    assert rows["good"]["error"] == ""

    failures = _read_csv(out / "failures.csv")
    assert [f["id"] for f in failures] == ["missing", "raises"]

    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == summary
    assert summary["model"] == {"name": "oracle", "sample_rate": SR}
    assert summary["n_items"] == 5 and summary["n_failed_items"] == 2
    assert summary["failure_rate"] == pytest.approx(2 / 3)  # worse and confused got worse
    assert summary["confusion_rate"] == pytest.approx(1 / 3)
    imps = [float(rows[i]["si_sdr_imp"]) for i in ("good", "worse", "confused")]
    assert summary["metrics"]["si_sdr_imp"]["n"] == 3
    assert summary["metrics"]["si_sdr_imp"]["mean"] == pytest.approx(np.mean(imps), abs=1e-4)
    assert {"mean", "median", "ci95_low", "ci95_high"} <= set(summary["metrics"]["pesq"])

    estimates = sorted(p.name for p in (out / "estimates").iterdir())
    assert estimates == ["confused.wav", "good.wav", "worse.wav"]  # no temp files left behind
    wave, rate = sf.read(str(out / "estimates" / "worse.wav"))
    assert rate == SR and np.abs(wave).max() > 0


def test_evaluate_list_resamples_and_averages_channels(tmp_path):
    # 1.5 s at 16 kHz, stereo whose channel mean is the speech
    speech = _speech_like(3.0)
    target = np.tile(speech[:, None], (1, 2)) * np.array([0.5, 1.5])
    mixture = target + 0.01 * _orthogonal(speech, 0.0, seed=1)[:, None]
    item = {
        "id": "a/b",
        "mixture": _write(tmp_path / "m.wav", mixture, 16000),
        "reference": _write(tmp_path / "r.wav", target[:, 0], 16000),
        "target": _write(tmp_path / "t.wav", target, 16000),
    }
    seen = {}

    def identity(mixture, reference, sample_rate):
        seen.update(shape=mixture.shape, rate=sample_rate, ndim=mixture.ndim)
        return mixture

    summary = evaluate_list([item], identity, tmp_path / "out", sample_rate=SR, with_pesq=False)
    assert seen == {"shape": (int(1.5 * 8000),), "rate": SR, "ndim": 1}
    assert summary["n_failed_items"] == 0 and "confusion_rate" not in summary
    # 40 dB of white noise at 16 kHz; the 8 kHz low-pass keeps about half of it: ~ +3 dB
    assert summary["metrics"]["si_sdr"]["mean"] == pytest.approx(43.0, abs=0.5)
    assert (tmp_path / "out" / "estimates" / "a_b.wav").is_file()


def test_read_eval_list(tmp_path):
    (tmp_path / "lists").mkdir()
    path = tmp_path / "lists" / "eval.csv"
    path.write_text("mixture,reference,target,interferer\nwav/m1.wav,wav/r1.wav,/abs/t1.wav,\n")
    (item,) = read_eval_list(path)
    assert item == {
        "mixture": str(tmp_path / "lists" / "wav" / "m1.wav"),
        "reference": str(tmp_path / "lists" / "wav" / "r1.wav"),
        "target": "/abs/t1.wav",
        "id": "m1",
    }
    path.write_text("id,mixture,target\nx,m.wav,t.wav\n")
    with pytest.raises(ValueError, match="missing column.*reference"):
        read_eval_list(path)
    path.write_text("id,mixture,reference,target\nx,m.wav,r.wav,t.wav\nx,m2.wav,r.wav,t.wav\n")
    with pytest.raises(ValueError, match="duplicate id 'x'"):
        read_eval_list(path)


class _FakeModel:
    name = "fake_usef"
    sample_rate = SR

    def __init__(self, seen, rate=None):
        self.seen = seen
        if rate is not None:  # one fake per input rate, named after it
            self.name, self.sample_rate = f"fake@{rate}", rate

    def extract(self, mixture, reference, sample_rate):
        self.seen.append((np.asarray(mixture).copy(), np.asarray(reference).copy()))
        return np.asarray(mixture) * 0.5


@pytest.fixture
def fake_model(monkeypatch):
    """``calls``: (name, device, sample_rate) per load; ``seen``: (mixture, reference) per extract."""
    fake = SimpleNamespace(calls=[], seen=[], by_rate=False)

    def load_model(name, device=None, sample_rate=None, **options):
        fake.calls.append((name, device, sample_rate))
        if name != "default":
            raise ValueError(f"unknown model {name!r}")
        return _FakeModel(fake.seen, sample_rate if sample_rate != SR or fake.by_rate else None)

    monkeypatch.setattr(usef, "load_model", load_model, raising=False)
    return fake


def test_cli_exit_codes(dataset, tmp_path, fake_model, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("mixture,target\nm.wav,t.wav\n")
    assert eval_cli.main(["--list", str(bad), "--out-dir", str(tmp_path / "o1")]) == 2
    assert "reference" in capsys.readouterr().err
    assert fake_model.calls == []  # a bad list is rejected before the model is loaded

    items, _ = dataset
    good = tmp_path / "good.csv"
    with open(good, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "mixture", "reference", "target", "interferer"])
        writer.writeheader()
        writer.writerows(items[:1])
    out = tmp_path / "o2"
    assert eval_cli.main(["--list", str(good), "--out-dir", str(out), "--no-pesq"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["name"] == "fake_usef" and summary["model"]["sample_rate"] == SR
    assert fake_model.calls[-1][2] == SR  # "default" is picked for the list's rate
    assert summary["metrics"]["si_sdr_imp"]["mean"] == pytest.approx(0.0, abs=0.01)  # 0.5 * mixture
    assert "si_sdr_imp" in capsys.readouterr().out

    with open(good, "a", newline="") as handle:
        csv.writer(handle).writerow(["broken", "missing.wav", "r.wav", "t.wav", ""])
    assert eval_cli.main(["--list", str(good), "--out-dir", str(tmp_path / "o3"), "--no-pesq"]) == 1
    assert eval_cli.main(["--list", str(good), "--out-dir", str(tmp_path / "o4"), "--model", "nope"]) == 2
    assert eval_cli.main(["--out-dir", str(tmp_path / "o5")]) == 2  # neither --list nor --libri2mix
    assert eval_cli.main(["--help"]) == 0
    assert "usef eval --list eval.csv" in capsys.readouterr().out


MIXTURES = [
    ("19-198-0001", "26-495-0001"),
    ("19-198-0002", "26-495-0002"),
    ("19-198-0003", "26-495-0003"),
]


def _fake_libri2mix(root: Path):
    """Three 2-talker mixtures from two speakers with three utterances each; the
    metadata holds absolute paths of the machine that generated it, as LibriMix does."""
    base = root / "wav8k" / "min"
    rows = []
    for i, (u1, u2) in enumerate(MIXTURES):
        mix_id = f"{u1}_{u2}"
        s1, s2 = _speech_like(1.5, 110 + 5 * i), _speech_like(1.5, 190 + 5 * i)[::-1].copy()
        _write(base / "test" / "s1" / f"{mix_id}.wav", s1)
        _write(base / "test" / "s2" / f"{mix_id}.wav", s2)
        _write(base / "test" / "mix_clean" / f"{mix_id}.wav", s1 + s2)
        there = "/elsewhere/Libri2Mix/wav8k/min/test"
        rows.append(
            f"{mix_id},{there}/mix_clean/{mix_id}.wav,{there}/s1/{mix_id}.wav,"
            f"{there}/s2/{mix_id}.wav,12000"
        )
    (base / "metadata").mkdir(parents=True)
    (base / "metadata" / "mixture_test_mix_clean.csv").write_text(
        "mixture_ID,mixture_path,source_1_path,source_2_path,length\n"
        + "\n".join(rows[::-1])  # not sorted by ID, as in the released lists
        + "\n"
    )


def _utterance(reference: Path) -> str:
    """LibriSpeech id held by a source file ``.../s<k+1>/<mixture_ID>.wav``."""
    return reference.stem.split("_")[int(reference.parent.name[1:]) - 1]


def _libri2mix_argv(root, out, *extra):
    return ["--libri2mix", str(root), "--subset", "test", "--out-dir", str(out),
            "--no-pesq", "--no-estimates", *extra]


def test_cli_libri2mix_writes_data_layer_enrollment(tmp_path, fake_model):
    root, out = tmp_path / "Libri2Mix", tmp_path / "out"
    _fake_libri2mix(root)
    argv = _libri2mix_argv(root, out, "--seed", "3")
    assert eval_cli.main(argv) == 0
    path = out / "enrollment.csv"
    assert path.read_text().splitlines()[0] == "mixture_ID,target_index,reference_path"
    entries = read_enrollment_list(path)
    # the data layer's draw for the same seed, written relative to ROOT
    rows = read_metadata(metadata_path(root, SR, "min", "test", "mix_clean"), root)
    assert entries == [
        Enrollment(e.mixture_id, e.target_index, Path(e.reference_path).relative_to(root).as_posix())
        for e in make_enrollment_list(rows, seed=3)
    ]
    assert sorted((e.mixture_id, e.target_index) for e in entries) == sorted(
        (f"{u1}_{u2}", k) for u1, u2 in MIXTURES for k in (0, 1)
    )
    for e in entries:
        reference = root / e.reference_path
        target = e.mixture_id.split("_")[e.target_index]
        assert reference.is_file()
        assert _utterance(reference).split("-")[0] == target.split("-")[0]  # same speaker
        assert _utterance(reference) != target  # another utterance

    metrics = {row["id"]: row for row in _read_csv(out / "metrics.csv")}
    assert list(metrics) == [f"{u1}_{u2}_s{k}" for u1, u2 in MIXTURES for k in (1, 2)]
    assert all(row["error"] == "" for row in metrics.values())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data"]["subset"] == "test" and "confusion_rate" in summary
    assert summary["data"]["enrollment"] == str(path)

    # the data layer accepts eval's list as is and leaves it unchanged
    first = path.read_text()
    dataset = Libri2MixTSE(root, split="test", sample_rate=SR, enrollment=path, seed=99)
    assert len(dataset) == 6 and path.read_text() == first

    assert eval_cli.main(argv[:-1] + ["4", "--limit", "2"]) == 0  # the stored draw is reused
    assert path.read_text() == first
    assert [row["id"] for row in _read_csv(out / "metrics.csv")] == list(metrics)[:2]
    dev = ["--libri2mix", str(root), "--subset", "dev", "--out-dir", str(out)]
    assert eval_cli.main(dev) == 2  # no dev metadata


def test_cli_libri2mix_accepts_data_layer_list(tmp_path, fake_model, capsys):
    root = tmp_path / "Libri2Mix"
    _fake_libri2mix(root)
    base = root / "wav8k" / "min" / "test"
    # a hand-made draw: each target's reference is its speaker's source in the next mixture
    ids = [f"{u1}_{u2}" for u1, u2 in MIXTURES]
    expected = {
        (mix, k): base / f"s{k + 1}" / f"{ids[(i + 1) % 3]}.wav"
        for i, mix in enumerate(ids)
        for k in (0, 1)
    }
    listed = tmp_path / "exp" / "test_enrollment.csv"
    listed.parent.mkdir()
    write_enrollment_list(
        listed, [Enrollment(m, k, str(p)) for (m, k), p in expected.items()], root
    )
    out = tmp_path / "out"
    assert eval_cli.main(_libri2mix_argv(root, out, "--enrollment", str(listed))) == 0
    assert not (out / "enrollment.csv").exists()  # the given list is used, not a new draw
    assert json.loads((out / "summary.json").read_text())["data"]["enrollment"] == str(listed)
    # every item was extracted with the reference the list names
    assert len(fake_model.seen) == 6
    for (mix, k), reference in expected.items():
        mixture = sf.read(str(base / "mix_clean" / f"{mix}.wav"), dtype="float32")[0]
        wanted = sf.read(str(reference), dtype="float32")[0]
        (got,) = [r for m, r in fake_model.seen if np.array_equal(m, mixture)][k : k + 1]
        assert np.array_equal(got, wanted)

    # a missing target, a missing file and the old eval format are usage errors
    write_enrollment_list(
        listed, [Enrollment(m, k, str(p)) for (m, k), p in expected.items() if k == 0], root
    )
    n_loads = len(fake_model.calls)
    assert eval_cli.main(_libri2mix_argv(root, out, "--enrollment", str(listed))) == 2
    assert "target_index 1" in capsys.readouterr().err
    assert eval_cli.main(_libri2mix_argv(root, out, "--enrollment", str(tmp_path / "no.csv"))) == 2
    assert "no such file" in capsys.readouterr().err
    listed.write_text("id,mixture_id,target_utterance,speaker,reference_utterance,reference\n")
    assert eval_cli.main(_libri2mix_argv(root, out, "--enrollment", str(listed))) == 2
    assert "lacks columns" in capsys.readouterr().err
    assert len(fake_model.calls) == n_loads  # all rejected before loading the model


def test_silent_and_perfect_estimates_are_scored_not_dropped(dataset, tmp_path):
    # fast_bss_eval raised on both, and the items vanished from the means and the failure rate
    items, oracle = dataset
    items = items[:2]
    silent = {"good": "silent", "worse": "perfect"}

    def extract(mixture, reference, rate):
        estimate = oracle(mixture, reference, rate)
        if silent[_which(items, mixture)] == "silent":
            return np.zeros_like(estimate), {"model": "m-silent"}
        target, _ = sf.read(items[1]["target"], dtype="float32")
        return 0.5 * target, {"model": "m-perfect"}

    def _which(items, mixture):
        for item in items:
            if np.array_equal(sf.read(item["mixture"], dtype="float32")[0], mixture):
                return item["id"]
        raise AssertionError

    summary = evaluate_list(items, extract, tmp_path / "out", with_pesq=False)
    rows = {row["id"]: row for row in _read_csv(tmp_path / "out" / "metrics.csv")}
    assert summary["n_failed_items"] == 0 and summary["metrics"]["si_sdr_imp"]["n"] == 2
    assert float(rows["good"]["si_sdr"]) == -100.0 and float(rows["worse"]["si_sdr"]) == 100.0
    assert summary["failure_rate"] == pytest.approx(0.5)  # the silent one is a failure
    assert rows["good"]["model"] == "m-silent" and rows["worse"]["model"] == "m-perfect"
    assert float(rows["worse"]["level_db"]) == pytest.approx(20 * math.log10(0.5), abs=1e-3)
    level = summary["level"]
    assert level["n"] == 2 and level["n_over_full_scale"] == 0


def test_cli_default_model_is_chosen_per_item_rate(tmp_path, fake_model):
    # `default` was chosen once from the first file: 8 kHz items then ran through the
    # 16 kHz model. Each rate now loads its own default once, and metrics.csv says which.
    fake_model.by_rate = True
    rows = []
    for i, rate in enumerate((16000, 8000, 16000, 8000)):
        speech = _speech_like(1.0, f0=120 + 10 * i)
        target = signal.resample_poly(speech, rate // 8000, 1) if rate != SR else speech
        mixture = target + 0.1 * _orthogonal(target, 0.0, i)
        rows.append({"id": f"i{i}", "mixture": _write(tmp_path / f"m{i}.wav", mixture, rate),
                     "reference": _write(tmp_path / f"r{i}.wav", target, rate),
                     "target": _write(tmp_path / f"t{i}.wav", target, rate)})
    listing = tmp_path / "mixed.csv"
    with open(listing, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert eval_cli.main(["--list", str(listing), "--out-dir", str(tmp_path / "o"), "--no-pesq"]) == 0
    assert sorted(rate for _, _, rate in fake_model.calls) == [8000, 16000]  # each loaded once
    served = {row["id"]: row["model"] for row in _read_csv(tmp_path / "o" / "metrics.csv")}
    assert served == {"i0": "fake@16000", "i1": "fake@8000", "i2": "fake@16000", "i3": "fake@8000"}
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["model"]["served"] == {"fake@16000": 2, "fake@8000": 2}
    assert Path(summary["data"]["list"]).is_absolute()  # `usef report` works from any cwd
