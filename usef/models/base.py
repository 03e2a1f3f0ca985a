"""The fixed extraction pipeline shared by every model: encode -> condition -> separate -> decode."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from usef.audio_chunks import grid_offsets
from usef.checkpoint_io import save_pretrained as _save_pretrained
from usef.modules.conformer import ConformerSeparator
from usef.modules.encoder import FeatureEncoder, valid_mask
from usef.modules.stft import STFTCodec
from usef.modules.tfgridnet import TFGridNetSeparator

SEPARATORS: dict[str, Callable[..., nn.Module]] = {
    "tfgridnet": TFGridNetSeparator,
    "conformer": ConformerSeparator,
}
SPECTRAL_OUTPUTS = ("mapping", "mask")

Condition = dict[str, torch.Tensor]


def build_separator(kind: str, in_channels: int, num_bins: int, args: dict[str, Any]) -> nn.Module:
    """Separator ``kind`` taking ``in_channels`` feature channels over ``num_bins`` bins."""
    if kind not in SEPARATORS:
        raise ValueError(f"unknown separator {kind!r}; choose one of {', '.join(sorted(SEPARATORS))}")
    args = dict(args)
    if kind == "conformer":
        args["num_bins"] = num_bins
    return SEPARATORS[kind](in_channels=in_channels, **args)


def normalise(wave: torch.Tensor, lengths: torch.Tensor | None = None, eps: float = 1e-8):
    """Divide each item by its standard deviation over its valid samples.

    Shape:
        ``(B, T)`` -> ``(B, T)`` and the scale ``(B, 1)``.
    """
    if lengths is None:
        std = wave.std(dim=-1, keepdim=True, unbiased=False)
    else:
        valid = valid_mask(lengths, wave.shape[-1]).to(wave.dtype)
        count = valid.sum(-1, keepdim=True).clamp_min(1.0)
        mean = (wave * valid).sum(-1, keepdim=True) / count
        std = (((wave - mean) * valid).pow(2).sum(-1, keepdim=True) / count).sqrt()
    scale = std + eps
    return wave / scale, scale


class TargetSpeakerExtractor(nn.Module):
    """Base extractor: the one pipeline every model follows.

    ``forward(mixture, reference)`` runs
    ``encode -> condition -> separate -> decode``:

    - **encode**: each mixture is divided by its standard deviation (restored at the end, as in
      USEF/TF-GridNet), STFT'd to ``(B, 2, T_mix, F)`` and passed through the shared
      :class:`~usef.modules.encoder.FeatureEncoder` to ``(B, C, T_mix, F)``.
    - **condition** (subclass): fuses the speaker information into the features; its
      reference-side work is done once by :meth:`prepare_condition`.
    - **separate**: a separator maps the conditioned features to ``(B, 2, T_mix, F)``.
    - **decode**: complex spectral mapping (the estimate *is* the output) or a complex mask on the
      mixture spectrum, iSTFT, rescale.

    Subclasses set ``self.separator`` and implement :meth:`prepare_condition` and :meth:`condition`.

    Shape:
        - mixture ``(B, T_mix)`` samples at ``sample_rate``; reference ``(B, T_ref)`` samples;
          reference_lengths ``(B,)`` valid samples of a zero-padded batch; embedding ``(B, E)``.
        - output ``(B, T_mix)``.
    """

    name: str = ""
    #: references shorter than this are refused by the API (too little to identify a voice)
    min_reference_seconds: float = 0.5

    def __init__(
        self,
        sample_rate: int,
        n_fft: int,
        hop_length: int,
        win_length: int | None,
        encoder_channels: int,
        spectral_output: str,
    ) -> None:
        super().__init__()
        if spectral_output not in SPECTRAL_OUTPUTS:
            raise ValueError(f"spectral_output must be one of {SPECTRAL_OUTPUTS}, got {spectral_output!r}")
        self.sample_rate = int(sample_rate)
        self.spectral_output = spectral_output
        self.stft = STFTCodec(n_fft, hop_length, win_length)
        self.encoder = FeatureEncoder(encoder_channels)
        # constructor args are the config: subclasses add theirs, checkpoints store the whole dict
        self.config: dict[str, Any] = {
            "sample_rate": sample_rate, "n_fft": n_fft, "hop_length": hop_length, "win_length": win_length,
            "encoder_channels": encoder_channels, "spectral_output": spectral_output,
        }

    # -- the contract ---------------------------------------------------------------------
    needs_reference: bool = True
    embedding_dim: int | None = None

    @property
    def min_reference_samples(self) -> int:
        return round(self.min_reference_seconds * self.sample_rate)

    def prepare_condition(
        self,
        reference: torch.Tensor | None = None,
        reference_lengths: torch.Tensor | None = None,
        embedding: torch.Tensor | None = None,
    ) -> Condition:
        """Everything the model needs from the reference, computed once (reused across chunks)."""
        raise NotImplementedError

    def condition(self, features: torch.Tensor, condition: Condition) -> torch.Tensor:
        """Fuse speaker information into mixture features ``(B, C, T_mix, F)``."""
        raise NotImplementedError

    def enrollment_state(
        self, reference: torch.Tensor, reference_lengths: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Reference-side state of ``N`` clips of *one* speaker, pooled into one item.

        This is what :class:`usef.enrollment.Enrollment` stores: computed once, saved, and turned
        into a condition by :meth:`enrollment_condition` whenever it is used.

        Shape:
            reference ``(N, T_ref)`` samples (zero-padded), reference_lengths ``(N,)`` -> a dict of
            tensors without a batch dimension (see the subclass).
        """
        raise NotImplementedError

    def enrollment_condition(self, states: list[dict[str, torch.Tensor]]) -> Condition:
        """The condition for a batch of enrollment states (one per mixture of the batch)."""
        raise NotImplementedError

    def forward(
        self,
        mixture: torch.Tensor,
        reference: torch.Tensor | None = None,
        reference_lengths: torch.Tensor | None = None,
        embedding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.extract(mixture, self.prepare_condition(reference, reference_lengths, embedding))

    def extract(self, mixture: torch.Tensor, condition: Condition, shifts: int = 1) -> torch.Tensor:
        """Run the pipeline on ``mixture (B, T_mix)`` with a prepared condition.

        ``shifts > 1`` averages the outputs of ``shifts`` passes whose STFT frame grids are
        offset by ``k * hop_length / shifts`` samples (``k = 0 .. shifts-1``; the mixture is
        delayed by that many zeros and the output advanced back). A frame-level model is not
        invariant to where its frames fall on the signal, and the passes make different errors:
        the average is a test-time ensemble at ``shifts`` times the cost. ``shifts=1`` is the
        plain pipeline, unchanged.

        Shape:
            mixture ``(B, T_mix)`` -> estimate ``(B, T_mix)``.
        """
        if mixture.dim() != 2:
            raise ValueError(f"mixture must be (B, T_mix), got shape {tuple(mixture.shape)}")
        offsets = grid_offsets(self.stft.hop_length, shifts)
        if shifts > 1:
            total = None
            for offset in offsets:
                delayed = torch.nn.functional.pad(mixture, (offset, 0))
                out = self.extract(delayed, condition)[:, offset:]
                # (B, T_mix)
                total = out if total is None else total + out
            return total / shifts
        length = mixture.shape[-1]
        spec, scale = self.encode(mixture)
        # spec (B, 2, T_mix, F); features (B, C, T_mix, F)
        features = self.encoder(spec)
        fused = self.condition(features, condition)
        # (B, C_sep, T_mix, F)
        separated = self.separator(fused)
        # (B, 2, T_mix, F)
        return self.decode(separated, spec, length) * scale
        # (B, T_mix)

    def widen_state(self, state: dict[str, torch.Tensor], source_sample_rate: int, source_n_fft: int,
                    source_hop_length: int) -> list[str]:
        """Make a narrow-band checkpoint's F-dependent weights fit this wide-band model, in place.

        Only when the source's bins are this model's low bins (same Hz per bin) and its frames
        the same length in time; the F-dependent blocks (``widen_state`` of a separator) then
        copy the narrow-band weights into the low bins and zero the others. Returns the names
        widened (empty when the bins do not line up: those tensors then start afresh).
        """
        same_bins = source_sample_rate * self.stft.n_fft == self.sample_rate * source_n_fft
        same_hop = source_hop_length * self.sample_rate == self.stft.hop_length * source_sample_rate
        if not (same_bins and same_hop) or self.sample_rate <= source_sample_rate:
            return []
        widened = []
        for name, module in self.named_modules():
            if module is not self and hasattr(module, "widen_state"):
                widened += module.widen_state(state, prefix=f"{name}." if name else "")
        return widened

    def save_pretrained(self, directory, extra: dict[str, Any] | None = None):
        """Write ``model.safetensors`` + ``config.yaml`` into ``directory`` (see :mod:`usef.checkpoint_io`)."""
        return _save_pretrained(self, directory, extra)

    # -- the fixed stages -------------------------------------------------------------------
    def encode(self, wave: torch.Tensor, lengths: torch.Tensor | None = None):
        """Normalised STFT ``(B, 2, T, F)`` and the per-item scale ``(B, 1)``."""
        normalised, scale = normalise(wave.float(), lengths)
        return self.stft.encode(normalised), scale

    def decode(self, separated: torch.Tensor, mixture_spec: torch.Tensor, length: int) -> torch.Tensor:
        separated = separated.float()
        if self.spectral_output == "mask":
            # complex multiplication of the mask with the mixture spectrum
            real = separated[:, 0] * mixture_spec[:, 0] - separated[:, 1] * mixture_spec[:, 1]
            imag = separated[:, 0] * mixture_spec[:, 1] + separated[:, 1] * mixture_spec[:, 0]
            separated = torch.stack((real, imag), dim=1)
        return self.stft.decode(separated, length)

    def encode_reference(self, reference: torch.Tensor, lengths: torch.Tensor | None = None):
        """Shared-encoder features of (possibly zero-padded) references.

        Each item is normalised on its valid samples; the right STFT edge of each item gets the
        same reflection padding it would get alone, padded frames are zeroed before the conv and
        left out of the normalisation statistics. So a padded batch gives every item exactly
        the features it gets alone (up to float rounding), in one batched pass.

        Shape:
            ``(B, T_ref)`` samples and ``(B,)`` valid samples -> features ``(B, C, T_ref, F)``
            frames, valid frame counts ``(B,)`` and a ``(B, T_ref)`` frame mask (None when
            nothing is padded).
        """
        if reference.dim() != 2:
            raise ValueError(f"reference must be (B, T_ref), got shape {tuple(reference.shape)}")
        batch, total = reference.shape
        if lengths is None or bool((lengths == total).all()):
            spec, _ = self.encode(reference)
            frame_lengths = torch.full((batch,), spec.shape[2], device=reference.device, dtype=torch.long)
            return self.encoder(spec), frame_lengths, None
        lengths = lengths.to(reference.device).long()
        if lengths.shape != (batch,):
            raise ValueError(f"reference_lengths must be (B,) = ({batch},), got {tuple(lengths.shape)}")
        edge = self.stft.n_fft // 2
        if bool((lengths <= edge).any()) or bool((lengths > total).any()):
            raise ValueError(f"reference_lengths must be in {edge + 1}..{total}, got {lengths.tolist()}")
        normalised, _ = normalise(reference.float(), lengths)
        # Write each item's reflection padding after its last valid sample, as torch.stft(center=True)
        # does at the end of an unpadded signal (reflection excludes the edge sample).
        positions = torch.arange(total + edge, device=reference.device)[None, :]
        valid_len = lengths[:, None]
        source = torch.where(positions < valid_len, positions, 2 * valid_len - 2 - positions).clamp(0, total - 1)
        extended = torch.gather(normalised, 1, source) * (positions < valid_len + edge)
        spec = self.stft.encode(extended)
        frame_lengths = lengths // self.stft.hop_length + 1
        frames = spec.shape[2]
        frame_mask = valid_mask(frame_lengths, frames)
        spec = spec * frame_mask[:, None, :, None]
        # (B, 2, T_ref, F), padded frames zero
        return self.encoder(spec, frame_mask), frame_lengths, frame_mask
