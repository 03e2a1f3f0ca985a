"""Two extractors at two sample rates, averaged where their bands overlap.

A wide-band model (e.g. ``usef-conformer-16k``) and a narrow-band one (``usef-conformer-8k``)
trained apart make different errors on the band both cover: their average there is a test-time
ensemble, while above the narrow model's Nyquist frequency only the wide model speaks. The two
bundled Conformers have STFTs whose bins line up exactly (32 ms windows, 16 ms hops, 31.25 Hz
per bin: the narrow model's bins are the wide model's low bins), so the narrow model's input is
made, and its output put back, in the wide model's STFT domain: no resampling filter is needed,
and the combination is one weighted sum per bin.

Each member keeps its own fixed pipeline (``encode -> condition -> separate -> decode``); the
ensemble's condition is the two members' conditions side by side (keys prefixed ``wide.`` and
``narrow.``), so references, enrollments and chunked extraction work as for a single model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from usef.checkpoint_io import save_pretrained as _save_pretrained
from usef.models.base import Condition, TargetSpeakerExtractor

MEMBERS = ("wide", "narrow")


def _split(condition: Condition, member: str) -> Condition:
    prefix = member + "."
    return {key[len(prefix):]: value for key, value in condition.items() if key.startswith(prefix)}


def _join(**conditions: Condition) -> Condition:
    return {f"{member}.{key}": value for member, condition in conditions.items() for key, value in condition.items()}


def _fit_gain(estimate: torch.Tensor, mixture: torch.Tensor) -> torch.Tensor:
    # (B, T) twice -> (B, 1): per-item least-squares gain onto the mixture; members trained with
    # different level rules (scale-invariant loss vs a calibrated output) are brought to one
    # level before averaging
    return (estimate * mixture).sum(-1, keepdim=True) / (estimate.pow(2).sum(-1, keepdim=True) + 1e-8)


def _gain_onto(spec: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # (B, F, frames) twice -> (B,): the real least-squares gain taking spec onto target
    num = (spec.conj() * target).real.sum(dim=(1, 2))
    return num / (spec.abs().pow(2).sum(dim=(1, 2)) + 1e-8)


class BandEnsemble(nn.Module):
    """A wide-band and a narrow-band extractor whose STFT bins line up, averaged on the low band.

    Args:
        wide: the model at the ensemble's rate (its STFT is the one the members share).
        narrow: a model at ``wide.sample_rate / ratio`` (integer ratio) whose STFT has the same
            window and hop in seconds, so its ``F_n`` bins are the wide model's lowest ``F_n``.
        narrow_weight: weight of the narrow model's estimate on the shared band, in [0, 1]
            (the wide model's is ``1 - narrow_weight``).
        narrow_shifts: frame-grid passes of the narrow model (its own test-time average).
        taper_bins: the narrow weight falls linearly to zero over the top ``taper_bins`` shared
            bins, so the hand-over at the narrow model's Nyquist frequency has no edge.
        fit_levels: fit each member's output to its mixture by one gain before averaging, for
            members whose output level is arbitrary (trained with a scale-invariant loss); False
            averages the raw outputs, for members trained to output the target's level (a
            calibrated level, and silence for an absent talker, which a fit would undo).
        freeze_narrow: train only the wide member (the narrow one keeps its weights and stays in
            eval mode), so that the wide model learns to complement a fixed narrow one.
        level_from_narrow: after the average, one gain per item (least squares on the shared
            band) brings the result onto the narrow member's raw output, so the ensemble takes
            the narrow member's level. For a narrow member trained to a calibrated level beside a
            wide one whose level is arbitrary: with ``fit_levels`` alone the result is fitted to
            the mixture, which turns the narrow member's silence for an absent talker into the
            other talkers at nearly the mixture's level. The shape of the output is unchanged
            (one gain), so scale-invariant scores are too.

    Shape:
        mixture ``(B, T_mix)`` at ``sample_rate`` -> estimate ``(B, T_mix)``; the condition holds
        both members' conditions (references ``(B, T_ref)`` at ``sample_rate``).
    """

    name = "band_ensemble"

    def __init__(self, wide: TargetSpeakerExtractor, narrow: TargetSpeakerExtractor, narrow_weight: float = 0.5,
                 narrow_shifts: int = 1, taper_bins: int = 4, fit_levels: bool = True,
                 freeze_narrow: bool = False, level_from_narrow: bool = False) -> None:
        super().__init__()
        ratio, remainder = divmod(int(wide.sample_rate), int(narrow.sample_rate))
        if remainder or ratio < 2:
            raise ValueError(f"band_ensemble: the wide rate must be an integer multiple (>= 2) of the narrow "
                             f"rate, got {wide.sample_rate} and {narrow.sample_rate} Hz")
        w, n = wide.stft, narrow.stft
        if (w.n_fft, w.hop_length, w.win_length) != (ratio * n.n_fft, ratio * n.hop_length, ratio * n.win_length):
            raise ValueError("band_ensemble: the members' STFTs must have the same window and hop in seconds "
                             f"(wide n_fft/hop/win {w.n_fft}/{w.hop_length}/{w.win_length}, narrow "
                             f"{n.n_fft}/{n.hop_length}/{n.win_length}, rate ratio {ratio})")
        if not (wide.needs_reference and narrow.needs_reference):
            raise ValueError("band_ensemble: both members must take a reference recording")
        if not 0.0 <= narrow_weight <= 1.0:
            raise ValueError(f"band_ensemble: narrow_weight must be within [0, 1], got {narrow_weight}")
        if int(narrow_shifts) < 1 or not 0 <= int(taper_bins) < n.num_bins:
            raise ValueError(f"band_ensemble: narrow_shifts >= 1 and 0 <= taper_bins < {n.num_bins} required")
        self.wide, self.narrow = wide, narrow
        self.ratio = ratio
        self.sample_rate = int(wide.sample_rate)
        self.narrow_weight = float(narrow_weight)
        self.narrow_shifts = int(narrow_shifts)
        self.taper_bins = int(taper_bins)
        self.fit_levels = bool(fit_levels)
        self.freeze_narrow = bool(freeze_narrow)
        self.level_from_narrow = bool(level_from_narrow)
        if self.freeze_narrow:
            narrow.requires_grad_(False)
        weights = torch.full((n.num_bins,), self.narrow_weight)
        if taper_bins:
            weights[-taper_bins:] = self.narrow_weight * torch.linspace(1.0, 0.0, taper_bins + 1)[1:]
        self.register_buffer("band_weights", weights, persistent=False)

    needs_reference = True
    embedding_dim = None

    @property
    def config(self) -> dict[str, Any]:
        # the members' own checkpoint configs: one file rebuilds the whole ensemble
        return {
            "wide": {"model": self.wide.name, "args": self.wide.config},
            "narrow": {"model": self.narrow.name, "args": self.narrow.config},
            "narrow_weight": self.narrow_weight, "narrow_shifts": self.narrow_shifts, "taper_bins": self.taper_bins,
            "fit_levels": self.fit_levels, "freeze_narrow": self.freeze_narrow,
            "level_from_narrow": self.level_from_narrow,
        }

    def save_pretrained(self, directory, extra: dict[str, Any] | None = None, link: dict[str, Any] | None = None):
        """Write ``model.safetensors`` (both members, ``wide.*`` / ``narrow.*``) + ``config.yaml``;
        ``link`` (member -> its own checkpoint folder) links a member's weights instead of
        copying them (:func:`usef.checkpoint_io.save_pretrained`)."""
        return _save_pretrained(self, directory, extra, link)

    def train(self, mode: bool = True) -> BandEnsemble:
        super().train(mode)
        if self.freeze_narrow:
            self.narrow.eval()  # a frozen member's normalisation statistics must not move either
        return self

    @property
    def stft(self):
        """The wide member's STFT: its frame grid is the one ``shifts`` offsets."""
        return self.wide.stft

    @property
    def min_reference_seconds(self) -> float:
        return max(self.wide.min_reference_seconds, self.narrow.min_reference_seconds)

    @property
    def min_reference_samples(self) -> int:
        return round(self.min_reference_seconds * self.sample_rate)

    # -- between the two rates, in the shared STFT domain ---------------------------------
    def _to_narrow(self, wave: torch.Tensor) -> torch.Tensor:
        # (B, T) at the wide rate, T a multiple of ratio -> (B, T / ratio): keep the shared bins.
        # A Hann window sampled ratio times denser sums ratio times more samples, hence / ratio.
        spec = self.wide.stft.spectrum(wave)[:, : self.narrow.stft.num_bins] / self.ratio
        return self.narrow.stft.inverse(spec, wave.shape[-1] // self.ratio)

    def _narrow_reference(self, reference: torch.Tensor, lengths: torch.Tensor | None):
        # (B, T_ref) -> (B, ceil(T_ref / ratio)) and valid lengths (B,)
        if lengths is None or bool((lengths == reference.shape[-1]).all()):
            return self._to_narrow(self._pad_to_ratio(reference)), None
        # each item alone, so that its STFT edge sees its own end and not the batch's zero padding:
        # a padded batch then gives every item exactly what it gets alone
        total = -(-reference.shape[-1] // self.ratio)
        items = [self._to_narrow(self._pad_to_ratio(reference[i : i + 1, : int(n)])) for i, n in enumerate(lengths)]
        narrow = torch.cat([nn.functional.pad(item, (0, total - item.shape[-1])) for item in items])
        return narrow, torch.tensor([item.shape[-1] for item in items], device=reference.device)

    def _pad_to_ratio(self, wave: torch.Tensor) -> torch.Tensor:
        return nn.functional.pad(wave, (0, (-wave.shape[-1]) % self.ratio))

    # -- the extractor contract ------------------------------------------------------------
    def prepare_condition(self, reference: torch.Tensor | None = None, reference_lengths: torch.Tensor | None = None,
                          embedding: torch.Tensor | None = None) -> Condition:
        """Both members' conditions from one reference at the ensemble's rate."""
        if reference is None:
            raise ValueError("band_ensemble takes a reference recording, not an embedding")
        narrow_reference, narrow_lengths = self._narrow_reference(reference, reference_lengths)
        return _join(wide=self.wide.prepare_condition(reference, reference_lengths),
                     narrow=self.narrow.prepare_condition(narrow_reference, narrow_lengths))

    def enrollment_state(self, reference: torch.Tensor, reference_lengths: torch.Tensor | None = None
                         ) -> dict[str, torch.Tensor]:
        narrow_reference, narrow_lengths = self._narrow_reference(reference, reference_lengths)
        return _join(wide=self.wide.enrollment_state(reference, reference_lengths),
                     narrow=self.narrow.enrollment_state(narrow_reference, narrow_lengths))

    def enrollment_condition(self, states: list[dict[str, torch.Tensor]]) -> Condition:
        return _join(**{member: getattr(self, member).enrollment_condition([_split(s, member) for s in states])
                        for member in MEMBERS})

    def forward(self, mixture: torch.Tensor, reference: torch.Tensor | None = None,
                reference_lengths: torch.Tensor | None = None, embedding: torch.Tensor | None = None) -> torch.Tensor:
        return self.extract(mixture, self.prepare_condition(reference, reference_lengths, embedding))

    def extract(self, mixture: torch.Tensor, condition: Condition, shifts: int = 1) -> torch.Tensor:
        """Both members on ``mixture (B, T_mix)``; their average on the shared band.

        ``shifts`` is the wide member's frame-grid passes; the narrow member runs its own
        ``narrow_shifts``.

        Shape:
            mixture ``(B, T_mix)`` -> estimate ``(B, T_mix)``.
        """
        if mixture.dim() != 2:
            raise ValueError(f"mixture must be (B, T_mix), got shape {tuple(mixture.shape)}")
        length = mixture.shape[-1]
        padded = self._pad_to_ratio(mixture.float())
        # (B, T_pad) at the wide rate; (B, T_pad / ratio) at the narrow rate
        narrow_mixture = self._to_narrow(padded)
        wide_out = self.wide.extract(padded, _split(condition, "wide"), shifts=shifts)
        narrow_out = self.narrow.extract(narrow_mixture, _split(condition, "narrow"), shifts=self.narrow_shifts)
        wide_out, narrow_out = wide_out.float(), narrow_out.float()
        # (B, F_n, frames): the narrow member's own output on the wide member's frames
        narrow_raw = self.narrow.stft.spectrum(narrow_out) * self.ratio
        narrow_spec = narrow_raw
        if self.fit_levels:
            wide_out = wide_out * _fit_gain(wide_out, padded)
            narrow_spec = narrow_raw * _fit_gain(narrow_out, narrow_mixture)[:, :, None]
        spec = self.wide.stft.spectrum(wide_out)  # (B, F_w, frames)
        shared = self.narrow.stft.num_bins
        low = spec[:, :shared] + self.band_weights[:, None] * (narrow_spec - spec[:, :shared])
        spec = torch.cat((low, spec[:, shared:]), dim=1)
        if self.level_from_narrow:
            spec = spec * _gain_onto(spec[:, :shared], narrow_raw)[:, None, None]
        return self.wide.stft.inverse(spec, padded.shape[-1])[:, :length]
