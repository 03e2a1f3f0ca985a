#!/usr/bin/env python
"""Speed and memory of every registered model (numbers for the README, not tests).

For each model at its default config: parameters, forward time and real-time factor (RTF =
processing time / audio duration) for a 10 s mixture with a 4 s reference on CPU with 1 and 2
threads, and peak resident memory of the process; the same on CUDA (fp32 and bf16 autocast)
when a GPU is present. ``--long`` also extracts a 1-hour mixture through ``usef.extract``
(chunked; at the model's own rate) and reports its peak RSS and RTF. Every measurement runs in a fresh subprocess so the
peak-memory figures do not mix.

    python tools/benchmark.py --json benchmark.json
    python tools/benchmark.py --models usef_conformer --long

``--compare-reference`` times TF-GridNet models with their separator run the plain way
(``usef.modules.tfgridnet_reference``, the published ``(B, D, T, F)`` layout) against the
shipped channels-last separator, fp32 and bf16 autocast, interleaved in one process on the same
weights and inputs (4 s mixture + 3 s reference by default, as the TF-GridNet speed issue
measures), and prints how far each output is from the plain fp32 one:

    python tools/benchmark.py --compare-reference --threads 1 --mixture-seconds 4 --reference-seconds 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

# Published counterparts, for the parameter comparison the issue asks to print.
RELEASED = {"usef_tfgridnet": "15.64 M (computed from the released USEF-TFGridNet config, USEF_FACTS.md 1.1)"}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _build(name: str):
    """A registry name at its default config, or a bundled model / model directory (its own config)."""
    from usef import hub
    from usef.checkpoint import load_pretrained
    from usef.models import build_model, list_models

    if name in list_models():
        return build_model(name)
    return load_pretrained(hub.resolve_model(name))


def measure_forward(name: str, device: str, threads: int, dtype: str, repeats: int,
                    mixture_seconds: float, reference_seconds: float, shifts: int = 1) -> dict:
    import torch

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    model = _build(name).eval().to(device)
    sr = model.sample_rate
    generator = torch.Generator().manual_seed(0)
    mixture = torch.randn(1, int(mixture_seconds * sr), generator=generator).to(device)
    reference = torch.randn(1, int(reference_seconds * sr), generator=generator).to(device)
    kwargs = {}
    if not model.needs_reference:
        kwargs["embedding"] = torch.randn(1, model.embedding_dim, generator=generator).to(device)
        reference = None
    autocast = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=dtype == "bf16")
    base_rss = _peak_rss_mb()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    def run():
        # as forward(), with the frame-grid shift averaging of TargetSpeakerExtractor.extract
        return model.extract(mixture, model.prepare_condition(reference, None, kwargs.get("embedding")),
                             shifts=shifts)

    with torch.inference_mode(), autocast:
        run()  # warm-up
        for _ in range(repeats):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            run()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    seconds = sorted(times)[len(times) // 2]
    result = {
        "model": name, "device": device, "threads": threads, "dtype": dtype, "shifts": shifts,
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds": seconds, "rtf": seconds / mixture_seconds,
        "peak_rss_mb": _peak_rss_mb(), "rss_before_mb": base_rss,
    }
    if device.startswith("cuda"):
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def compare_reference(name: str, device: str, threads: int, repeats: int,
                      mixture_seconds: float, reference_seconds: float) -> dict:
    """Plain vs shipped TF-GridNet separator, fp32 and bf16, interleaved; median seconds each."""
    import torch

    from usef.modules.tfgridnet import TFGridNetSeparator
    from usef.modules.tfgridnet_reference import reference_forward

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    model = _build(name).eval().to(device)
    separator = model.separator
    if not isinstance(separator, TFGridNetSeparator):
        raise TypeError(f"{name} has no TF-GridNet separator")
    shipped = separator.forward
    sr = model.sample_rate
    generator = torch.Generator().manual_seed(0)
    mixture = torch.randn(1, int(mixture_seconds * sr), generator=generator).to(device)
    reference = torch.randn(1, int(reference_seconds * sr), generator=generator).to(device)
    variants = [(path, dtype) for dtype in ("fp32", "bf16") for path in ("plain", "shipped")]
    times: dict[str, list[float]] = {f"{path}_{dtype}": [] for path, dtype in variants}
    outputs = {}
    cuda = device.startswith("cuda")
    with torch.inference_mode():
        for repeat in range(repeats + 1):  # the first round warms up and is not timed
            for path, dtype in variants:
                separator.forward = (lambda x: reference_forward(separator, x)) if path == "plain" else shipped
                autocast = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16,
                                          enabled=dtype == "bf16")
                with autocast:
                    if cuda:
                        torch.cuda.synchronize()
                    start = time.perf_counter()
                    estimate = model(mixture, reference)
                    if cuda:
                        torch.cuda.synchronize()
                    if repeat:
                        times[f"{path}_{dtype}"].append(time.perf_counter() - start)
                outputs[f"{path}_{dtype}"] = estimate.float()
    separator.forward = shipped
    plain = outputs["plain_fp32"]

    def snr_db(estimate):
        error = (estimate - plain).pow(2).sum().clamp_min(1e-30)
        return float(10 * torch.log10(plain.pow(2).sum() / error))

    seconds = {key: sorted(values)[len(values) // 2] for key, values in times.items()}
    return {"model": name, "device": device, "threads": threads, "mixture_seconds": mixture_seconds,
            "reference_seconds": reference_seconds, "seconds": seconds,
            "speedup_vs_plain_fp32": {key: seconds["plain_fp32"] / value for key, value in seconds.items()},
            "snr_vs_plain_fp32_db": {key: snr_db(value) for key, value in outputs.items() if key != "plain_fp32"},
            "max_abs_diff_shipped_fp32": float((outputs["shipped_fp32"] - plain).abs().max())}


def measure_long(model: str, hours: float, threads: int, precision: str = "fp32") -> dict:
    import numpy as np
    import torch

    import usef

    torch.set_num_threads(threads)
    extractor = usef.load_model(model, sample_rate=8000 if model == "default" else None, precision=precision)
    sr = extractor.sample_rate  # the model's own rate: no resampling in the measurement
    rng = np.random.default_rng(0)
    mixture = (0.1 * rng.standard_normal(int(hours * 3600 * sr))).astype(np.float32)
    reference = (0.1 * rng.standard_normal(4 * sr)).astype(np.float32)
    start = time.perf_counter()
    estimate = extractor.extract(mixture, reference, sample_rate=sr)
    seconds = time.perf_counter() - start
    assert estimate.shape == mixture.shape
    return {"model": extractor.name, "shifts": extractor.shifts, "precision": precision, "audio_hours": hours,
            "threads": threads,
            "seconds": seconds,
            "rtf": seconds / (hours * 3600), "peak_rss_mb": _peak_rss_mb()}


def _run_child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _compare_main(args: argparse.Namespace) -> int:
    import torch

    devices = [("cpu", t) for t in args.threads] + ([("cuda", 1)] if torch.cuda.is_available() else [])
    results = []
    for name in args.models or ["usef_tfgridnet"]:
        for device, threads in devices:
            result = _run_child(["compare", name, device, str(threads), str(args.repeats),
                                 str(args.mixture_seconds), str(args.reference_seconds)])
            result.update(model=name, device=device, threads=threads)
            results.append(result)
            if "error" in result:
                print(f"{name} {device} {threads} thr: error: {result['error']}")
                continue
            print(f"{name} {device} {threads} thr, {args.mixture_seconds:g} s mixture + "
                  f"{args.reference_seconds:g} s reference (median of {args.repeats}):")
            for key, seconds in result["seconds"].items():
                snr = result["snr_vs_plain_fp32_db"].get(key)
                print(f"  {key:14s} {seconds:8.3f} s  {result['speedup_vs_plain_fp32'][key]:5.2f}x"
                      + (f"  {snr:6.1f} dB from plain fp32" if snr is not None else ""))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"torch": torch.__version__, "cpu_count": os.cpu_count(), "results": results}, handle, indent=1)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*",
                        help="registry names (default config), bundled model names or model directories "
                             "(their own config, e.g. usef-conformer-16k); default: every registry name")
    parser.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mixture-seconds", type=float, default=10.0)
    parser.add_argument("--reference-seconds", type=float, default=4.0)
    parser.add_argument("--shifts", nargs="*", type=int, default=[1],
                        help="frame-grid offsets averaged per forward (TargetSpeakerExtractor.extract); one row each")
    parser.add_argument("--cpu-dtypes", nargs="*", choices=("fp32", "bf16"), default=["fp32"],
                        help="CPU rows in these precisions (bf16: bfloat16 autocast, as Extractor(precision='bf16'));"
                             " also applies to --long")
    parser.add_argument("--long", action="store_true", help="also the 1-hour chunked extraction")
    parser.add_argument("--long-model", default="default")
    parser.add_argument("--long-hours", type=float, default=1.0)
    parser.add_argument("--compare-reference", action="store_true",
                        help="only the plain-vs-shipped TF-GridNet comparison (default model: usef_tfgridnet)")
    parser.add_argument("--json", help="write all results to this file")
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child is not None:
        kind, *rest = args.child
        if kind == "forward":
            name, device, threads, dtype, repeats, mix_s, ref_s, shifts = rest
            result = measure_forward(name, device, int(threads), dtype, int(repeats), float(mix_s), float(ref_s),
                                     int(shifts))
        elif kind == "compare":
            name, device, threads, repeats, mix_s, ref_s = rest
            result = compare_reference(name, device, int(threads), int(repeats), float(mix_s), float(ref_s))
        else:
            model, hours, threads, precision = rest
            result = measure_long(model, float(hours), int(threads), precision)
        print(json.dumps(result))
        return 0

    import torch

    from usef.models import list_models

    if args.compare_reference:
        return _compare_main(args)
    names = args.models or list_models()
    for name in names:
        if name in RELEASED:
            from usef.models import build_model

            ours = sum(p.numel() for p in build_model(name).parameters())
            print(f"{name}: {ours / 1e6:.2f} M parameters; released model: {RELEASED[name]}")
    results = []
    configs = [("cpu", t, d, s) for t in args.threads for d in args.cpu_dtypes for s in args.shifts]
    if torch.cuda.is_available():
        configs += [("cuda", 0, dtype, s) for dtype in ("fp32", "bf16") for s in args.shifts]
    print(f"{'model':22s} {'device':6s} {'thr':>3s} {'dtype':5s} {'shift':>5s} {'params':>8s} {'time s':>8s} "
          f"{'RTF':>7s} {'peak MB':>8s}")
    for name in names:
        for device, threads, dtype, shifts in configs:
            result = _run_child(["forward", name, device, str(threads or 1), dtype, str(args.repeats),
                                 str(args.mixture_seconds), str(args.reference_seconds), str(shifts)])
            result.update(model=name, device=device, threads=threads, dtype=dtype, shifts=shifts)
            results.append(result)
            if "error" in result:
                print(f"{name:22s} {device:6s} {threads:3d} {dtype:5s} {shifts:5d} error: {result['error']}")
                continue
            peak = result.get("peak_cuda_mb", result["peak_rss_mb"])
            print(f"{name:22s} {device:6s} {threads:3d} {dtype:5s} {shifts:5d} {result['parameters'] / 1e6:7.2f}M "
                  f"{result['seconds']:8.3f} {result['rtf']:7.4f} {peak:8.0f}")
    if args.long:
        for threads in args.threads:
            for precision in args.cpu_dtypes:
                result = _run_child(["long", args.long_model, str(args.long_hours), str(threads), precision])
                results.append({"long": True, **result})
                print(f"long extraction ({args.long_model}, {threads} thr, {precision}): {result}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"torch": torch.__version__, "cpu_count": os.cpu_count(), "results": results}, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
