"""USEF-TSE: embedding-free conditioning by cross attention from mixture to reference frames."""

from __future__ import annotations

from typing import Any

import torch

from usef.models.base import Condition, TargetSpeakerExtractor, build_separator
from usef.modules.cross_attention import FullBandAttention
from usef.modules.encoder import valid_mask


class UsefExtractor(TargetSpeakerExtractor):
    """Universal Speaker Embedding Free extractor (Zeng & Li, TASLP 2025).

    Mixture and reference pass through the *same* encoder; a cross multi-head attention
    (queries: mixture frames, keys/values: reference frames) gives a target cue ``S`` for every
    mixture frame; ``[M; S]`` (channel concatenation, as in the released USEF-TFGridNet) drives
    the separator. No speaker embedding and no speaker-recognition model are involved.

    Differences from the released code (see ``usef/modules/cross_attention.py``): a reference
    padding mask (exact batching of references of different lengths) and F-independent
    attention weights. Keys and values are computed once per reference
    (:meth:`prepare_condition`) and reused for every chunk of a long mixture.

    Args:
        sample_rate: rate the model works at.
        n_fft, hop_length, win_length: STFT.
        encoder_channels: ``C`` of the shared encoder; the separator sees ``2C`` channels.
        attention_heads, attention_qk_channels: CMHA heads ``L`` and query/key channels ``E``.
        separator: ``"tfgridnet"`` or ``"conformer"``; ``separator_args`` its constructor args.
        spectral_output: ``"mapping"`` (complex spectral mapping) or ``"mask"`` (complex mask).

    Shape:
        mixture ``(B, T_mix)``, reference ``(B, T_ref)``, reference_lengths ``(B,)`` ->
        ``(B, T_mix)``.

    Example:
        >>> import torch
        >>> from usef.models import build_model
        >>> model = build_model("usef_conformer", preset="tiny").eval()
        >>> model(torch.randn(2, 8000), torch.randn(2, 6000)).shape
        torch.Size([2, 8000])
    """

    name = "usef"

    def __init__(
        self,
        sample_rate: int = 8000,
        n_fft: int = 128,
        hop_length: int = 64,
        win_length: int | None = None,
        encoder_channels: int = 128,
        attention_heads: int = 4,
        attention_qk_channels: int = 8,
        separator: str = "tfgridnet",
        separator_args: dict[str, Any] | None = None,
        spectral_output: str = "mapping",
    ) -> None:
        super().__init__(sample_rate, n_fft, hop_length, win_length, encoder_channels, spectral_output)
        separator_args = dict(separator_args or {})
        self.cross_attention = FullBandAttention(
            encoder_channels, attention_heads, attention_qk_channels, residual=False
        )
        self.separator = build_separator(separator, 2 * encoder_channels, self.stft.num_bins, separator_args)
        self.config.update({
            "attention_heads": attention_heads, "attention_qk_channels": attention_qk_channels,
            "separator": separator, "separator_args": separator_args,
        })

    def prepare_condition(
        self,
        reference: torch.Tensor | None = None,
        reference_lengths: torch.Tensor | None = None,
        embedding: torch.Tensor | None = None,
    ) -> Condition:
        if embedding is not None:
            raise ValueError("USEF models are embedding-free: pass reference=, not embedding=")
        if reference is None:
            raise ValueError("USEF models need a reference recording of the target speaker")

        features, _frame_lengths, frame_mask = self.encode_reference(reference, reference_lengths)
        # (B, C, T_ref, F)
        keys, values = self.cross_attention.project_key_value(features)
        # keys (B, L, T_ref, E*F), values (B, L, T_ref, (C/L)*F)
        condition = {"keys": keys, "values": values}
        if frame_mask is not None:
            condition["padding_mask"] = ~frame_mask
        return condition

    def enrollment_state(
        self, reference: torch.Tensor, reference_lengths: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Encoder features of several clips of one speaker, laid end to end along ``T_ref``.

        Each clip is encoded on its own (the padded batch of :meth:`encode_reference` is exact
        per item), so the encoder's conv never sees a frame of one clip next to a frame of
        another; only valid frames are kept. Concatenating them is exact for the attention:
        keys and values are per-frame projections (1x1 conv, PReLU, per-frame norm) and the
        attention treats reference frames as a set, so nothing after this point mixes
        neighbouring frames and no padding mask is needed between clips.

        Shape:
            reference ``(N, T_ref)`` samples, reference_lengths ``(N,)`` -> ``features``
            ``(C, sum_n T_ref_n, F)`` frames and ``clip_frames`` ``(N,)`` (frames per clip).
        """
        features, frame_lengths, _ = self.encode_reference(reference, reference_lengths)
        # (N, C, T_ref, F)
        pieces = [features[i, :, :count] for i, count in enumerate(frame_lengths.tolist())]
        return {"features": torch.cat(pieces, dim=1), "clip_frames": frame_lengths.long()}

    def enrollment_condition(self, states: list[dict[str, torch.Tensor]]) -> Condition:
        """Keys/values of a batch of enrollments; shorter ones are padded and masked out.

        Shape:
            states: ``B`` dicts with ``features`` ``(C, T_b, F)`` -> keys ``(B, L, T, E*F)``,
            values ``(B, L, T, (C/L)*F)`` and, when lengths differ, ``padding_mask`` ``(B, T)``.
        """
        lengths = [state["features"].shape[1] for state in states]
        total = max(lengths)
        features = torch.stack([
            torch.nn.functional.pad(state["features"], (0, 0, 0, total - state["features"].shape[1]))
            for state in states
        ]).float()
        # (B, C, T, F)
        keys, values = self.cross_attention.project_key_value(features)
        condition = {"keys": keys, "values": values}
        if min(lengths) < total:
            frame_lengths = torch.tensor(lengths, device=features.device)
            condition["padding_mask"] = ~valid_mask(frame_lengths, total)
        return condition

    def condition(self, features: torch.Tensor, condition: Condition) -> torch.Tensor:
        # features (B, C, T_mix, F)
        batch = features.shape[0]
        keys, values = condition["keys"], condition["values"]
        mask = condition.get("padding_mask")
        if keys.shape[0] == 1 and batch > 1:
            # one reference shared by several chunks of one mixture
            keys, values = keys.expand(batch, -1, -1, -1), values.expand(batch, -1, -1, -1)
            mask = None if mask is None else mask.expand(batch, -1)
        cue = self.cross_attention.attend(features, keys, values, mask)
        # (B, C, T_mix, F)
        return torch.cat((features, cue), dim=1)
        # (B, 2C, T_mix, F)
