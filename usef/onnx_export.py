"""Export a Conformer USEF model to ONNX: a reference graph and a per-chunk extraction graph.

The model is split where :meth:`~usef.models.base.TargetSpeakerExtractor.prepare_condition`
splits it, so that the reference is encoded once and reused for every chunk, as the torch API
does:

- ``reference.onnx``: the normalised reference spectrum -> cross-attention keys and values
  (shared encoder + key/value projections).
- ``extract.onnx``: the normalised mixture spectrum, keys and values -> the estimate's spectrum
  (shared encoder, cross attention, Conformer separator and, for ``spectral_output="mask"``,
  the complex mask applied to the mixture spectrum).

The STFT, the iSTFT, the per-item standard-deviation normalisation and its undoing (``* scale``)
stay outside the graphs: ONNX STFT support from torch export is unreliable, and
:mod:`usef.onnx_runtime` does them in NumPy exactly as :class:`usef.modules.stft.STFTCodec`
and :func:`usef.models.base.normalise` do. ``config.json`` records what that NumPy side needs.

Graph inputs and outputs (``L`` heads, ``E`` query/key channels, ``C`` encoder channels, ``F``
bins; every ``B``, ``T_mix`` and ``T_ref`` is a dynamic axis, frames of the STFT):

- reference.onnx: ``reference_spec (B, 2, T_ref, F)`` -> ``keys (B, L, T_ref, E*F)``,
  ``values (B, L, T_ref, (C/L)*F)``.
- extract.onnx: ``mixture_spec (B, 2, T_mix, F)``, ``keys (1 or B, L, T_ref, E*F)``,
  ``values (1 or B, L, T_ref, (C/L)*F)`` -> ``estimate_spec (B, 2, T_mix, F)``
  (channel 0 real, 1 imaginary; a keys/values batch of 1 is shared by every mixture).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from usef._version import __version__
from usef.models.base import normalise

logger = logging.getLogger(__name__)

__all__ = ["CONFIG_NAME", "EXTRACT_NAME", "FORMAT", "REFERENCE_NAME", "export_onnx"]

REFERENCE_NAME = "reference.onnx"
EXTRACT_NAME = "extract.onnx"
CONFIG_NAME = "config.json"
#: version of the folder layout and config.json (usef.onnx_runtime refuses others)
FORMAT = 1
# 17 is the first opset with LayerNormalization, which keeps the Conformer graph small
DEFAULT_OPSET = 17
# the normalisation epsilon of usef.models.base.normalise (its default argument)
NORMALISE_EPS = float(inspect.signature(normalise).parameters["eps"].default)
# traced example lengths in frames: different from each other and from the verification lengths,
# so a length baked into the graph by mistake shows up as a mismatch
_TRACE_FRAMES = (37, 23)
_VERIFY_FRAMES = ((61, 29), (5, 48))


def _encode(encoder: nn.Module, spec: torch.Tensor) -> torch.Tensor:
    """:class:`~usef.modules.encoder.FeatureEncoder` (unmasked) with its statistics reduced in stages.

    The same arithmetic as its one-group GroupNorm, but the mean and variance over ``(C, T, F)``
    are taken over ``F``, then ``T``, then ``C`` (a mean of equal-sized means is the mean).
    onnxruntime reduces a long axis set in float32 less exactly than torch: exported as one
    reduction (InstanceNormalization or ReduceMean), a 10 s mixture at 16 kHz (16 x 626 x 257
    values) came out 4e-4 of the peak off; staged, 5e-7, as torch.

    Shape:
        ``(B, 2, T, F)`` -> ``(B, C, T, F)``.
    """
    features = encoder.conv(spec)
    mean = features.mean(3, keepdim=True).mean(2, keepdim=True).mean(1, keepdim=True)
    centred = features - mean
    var = centred.pow(2).mean(3, keepdim=True).mean(2, keepdim=True).mean(1, keepdim=True)
    norm = encoder.norm
    return centred * torch.rsqrt(var + norm.eps) * norm.weight.view(1, -1, 1, 1) + norm.bias.view(1, -1, 1, 1)


class _ReferenceGraph(nn.Module):
    """Reference side of a USEF model: encoder features -> keys and values."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, reference_spec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # (B, 2, T_ref, F) -> (B, C, T_ref, F): a whole, unpadded reference needs no frame mask
        features = _encode(self.model.encoder, reference_spec)
        return self.model.cross_attention.project_key_value(features)


class _ExtractGraph(nn.Module):
    """Mixture side: encoder, conditioning, separator and the mask, up to the estimate's spectrum."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, mixture_spec: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        # mixture_spec (B, 2, T_mix, F)
        batch = mixture_spec.shape[0]
        # expand here (a no-op for a batch of B): model.condition's own "one reference for several
        # chunks" branch is a Python if on shapes, which tracing would freeze at the traced batch
        keys = keys.expand(batch, -1, -1, -1)
        values = values.expand(batch, -1, -1, -1)
        features = _encode(self.model.encoder, mixture_spec)
        fused = self.model.condition(features, {"keys": keys, "values": values})
        separated = self.model.separator(fused).float()
        # (B, 2, T_mix, F)
        if self.model.spectral_output == "mask":
            # as TargetSpeakerExtractor.decode: complex mask times the mixture spectrum
            real = separated[:, 0] * mixture_spec[:, 0] - separated[:, 1] * mixture_spec[:, 1]
            imag = separated[:, 0] * mixture_spec[:, 1] + separated[:, 1] * mixture_spec[:, 0]
            separated = torch.stack((real, imag), dim=1)
        return separated


def check_exportable(model: nn.Module) -> None:
    """Raise ``ValueError`` unless ``model`` is a USEF model with a Conformer separator."""
    from usef.models.usef import UsefExtractor
    from usef.modules.conformer import ConformerSeparator

    if not isinstance(model, UsefExtractor) or not isinstance(getattr(model, "separator", None), ConformerSeparator):
        kind = type(getattr(model, "separator", None)).__name__
        message = (f"ONNX export supports USEF models with a Conformer separator (usef_conformer); got "
                   f"{type(model).__name__} with a {kind} separator")
        # ValueError, as for every bad model argument (the CLI turns it into a usage error)
        raise ValueError(message)  # noqa: TRY004


def _export(module: nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
            dynamic_axes: dict[str, dict[int, str]], opset: int) -> None:
    kwargs: dict[str, Any] = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        # the TorchScript exporter: dynamic axes from tracing, and no onnxscript dependency
        kwargs["dynamo"] = False
    with warnings.catch_warnings():
        # deprecation of the TorchScript exporter and tracer notes on shape arithmetic: neither
        # concerns the user, and the verification below would catch a shape frozen by tracing
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True, **kwargs)


def _verify(model: nn.Module, directory: Path, tolerance: float) -> float:
    """Run both graphs with onnxruntime at untraced lengths; worst error relative to the output peak."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    reference = ort.InferenceSession(str(directory / REFERENCE_NAME), options, providers=["CPUExecutionProvider"])
    extract = ort.InferenceSession(str(directory / EXTRACT_NAME), options, providers=["CPUExecutionProvider"])
    bins = model.stft.num_bins
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for mix_frames, ref_frames in _VERIFY_FRAMES:
        mix = torch.randn(1, 2, mix_frames, bins, generator=generator)
        ref = torch.randn(1, 2, ref_frames, bins, generator=generator)
        with torch.inference_mode():
            keys, values = _ReferenceGraph(model)(ref)
            expected = _ExtractGraph(model)(mix, keys, values).numpy()
        got_keys, got_values = reference.run(None, {"reference_spec": ref.numpy()})
        got = extract.run(None, {"mixture_spec": mix.numpy(), "keys": got_keys, "values": got_values})[0]
        peak = max(float(np.abs(expected).max()), 1e-12)
        worst = max(worst, float(np.abs(got - expected).max()) / peak)
    if not worst <= tolerance:
        raise RuntimeError(f"ONNX export check failed: onnxruntime differs from torch by {worst:.2e} of the "
                           f"output peak (tolerance {tolerance:.0e})")
    return worst


def export_onnx(
    model: nn.Module,
    directory: str | os.PathLike,
    *,
    name: str | None = None,
    opset: int = DEFAULT_OPSET,
    verify: bool = True,
    tolerance: float = 1e-4,
) -> Path:
    """Write ``reference.onnx``, ``extract.onnx`` and ``config.json`` for ``model`` into ``directory``.

    Args:
        model: a USEF model with a Conformer separator (``usef_conformer``, e.g. the bundled
            ``usef-conformer-8k`` / ``usef-conformer-16k``); it is exported on the CPU in eval mode.
        directory: output folder (created; existing files of these names are replaced).
        name: model name recorded in config.json, e.g. the bundled folder's name (default:
            ``model.name``).
        opset: ONNX opset (at least 17).
        verify: run both graphs with onnxruntime at lengths other than the traced ones and
            compare with torch (needs ``onnxruntime``).
        tolerance: largest accepted error of that check, relative to the output's peak.

    Returns:
        ``directory`` as a Path.

    Raises:
        ValueError: not an exportable model or opset below 17.
        RuntimeError: the verification found a mismatch.
        ImportError: ``verify`` without onnxruntime installed.
    """
    check_exportable(model)
    if opset < 17:
        raise ValueError(f"opset must be at least 17 (LayerNormalization), got {opset}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    # traced on the CPU in eval mode; the caller's model keeps its device (a model elsewhere is
    # copied) and gets its train/eval mode back
    cpu_model = model.to("cpu") if next(model.parameters()).device.type == "cpu" else _cpu_copy(model)
    cpu_model.eval()
    try:
        bins = cpu_model.stft.num_bins
        mix_frames, ref_frames = _TRACE_FRAMES
        generator = torch.Generator().manual_seed(0)
        ref_spec = torch.randn(1, 2, ref_frames, bins, generator=generator)
        mix_spec = torch.randn(1, 2, mix_frames, bins, generator=generator)
        with torch.no_grad():
            keys, values = _ReferenceGraph(cpu_model)(ref_spec)
            _export(_ReferenceGraph(cpu_model), (ref_spec,), directory / REFERENCE_NAME, ["reference_spec"],
                    ["keys", "values"],
                    {"reference_spec": {0: "batch", 2: "reference_frames"},
                     "keys": {0: "batch", 2: "reference_frames"}, "values": {0: "batch", 2: "reference_frames"}},
                    opset)
            _export(_ExtractGraph(cpu_model), (mix_spec, keys, values), directory / EXTRACT_NAME,
                    ["mixture_spec", "keys", "values"], ["estimate_spec"],
                    {"mixture_spec": {0: "batch", 2: "mixture_frames"},
                     "keys": {0: "reference_batch", 2: "reference_frames"},
                     "values": {0: "reference_batch", 2: "reference_frames"},
                     "estimate_spec": {0: "batch", 2: "mixture_frames"}},
                    opset)
        error = _verify(cpu_model, directory, tolerance) if verify else None
    finally:
        model.train(was_training)
    config = onnx_config(cpu_model, name or getattr(model, "name", "") or type(model).__name__, opset)
    if error is not None:
        config["verified_relative_error"] = error
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    logger.info("exported %s to %s (opset %d%s)", config["model"], directory, opset,
                "" if error is None else f", onnxruntime vs torch {error:.1e} of the peak")
    return directory


def _cpu_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).to("cpu")


def onnx_config(model: nn.Module, name: str, opset: int) -> dict[str, Any]:
    """What :mod:`usef.onnx_runtime` needs besides the graphs: the STFT, the normalisation, the rate."""
    stft = model.stft
    return {
        "format": FORMAT,
        "model": name,
        "architecture": f"usef_{model.config['separator']}",
        "usef_version": __version__,
        "torch_version": torch.__version__,
        "opset": opset,
        "sample_rate": int(model.sample_rate),
        "n_fft": int(stft.n_fft),
        "hop_length": int(stft.hop_length),
        "win_length": int(stft.win_length),
        # torch.hann_window(win_length) (periodic), centred in n_fft; centre padding by reflection
        "window": "hann",
        "center": True,
        "pad_mode": "reflect",
        "normalise_eps": NORMALISE_EPS,
        "spectral_output": model.spectral_output,
        "min_reference_seconds": float(model.min_reference_seconds),
        "output_level": getattr(model, "output_level", None),
        # frame-grid offsets averaged at inference (TargetSpeakerExtractor.extract), as in torch
        "shifts": int(getattr(model, "inference_shifts", None) or 1),
        "graphs": {
            "reference": {"file": REFERENCE_NAME, "inputs": {"reference_spec": "(B, 2, T_ref, F)"},
                          "outputs": {"keys": "(B, L, T_ref, E*F)", "values": "(B, L, T_ref, (C/L)*F)"}},
            "extract": {"file": EXTRACT_NAME,
                        "inputs": {"mixture_spec": "(B, 2, T_mix, F)", "keys": "(1 or B, L, T_ref, E*F)",
                                   "values": "(1 or B, L, T_ref, (C/L)*F)"},
                        "outputs": {"estimate_spec": "(B, 2, T_mix, F)"}},
        },
    }
