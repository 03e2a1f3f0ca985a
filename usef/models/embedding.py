"""Embedding-conditioned twin of the USEF extractor: the comparison path."""

from __future__ import annotations

from typing import Any

import torch

from usef.models.base import Condition, TargetSpeakerExtractor, build_separator
from usef.modules.fusion import EmbeddingFusion
from usef.modules.speaker_encoder import SpeakerEncoder

EMBEDDING_SOURCES = ("joint", "precomputed")


class EmbeddingExtractor(TargetSpeakerExtractor):
    """Extractor conditioned on one speaker vector ``(B, E)``.

    It shares everything with :class:`~usef.models.usef.UsefExtractor` (STFT, encoder, separator
    classes, output head, normalisation) except the condition step: the speaker is given as one
    vector, fused into the mixture features by ``film``, ``multiply`` or ``concat``
    (:class:`~usef.modules.fusion.EmbeddingFusion`), once, at the separator input. (SpeakerBeam
    fuses once inside its TCN, WeSep before every block; one place keeps the separator module
    identical to USEF's, which is what a fair comparison needs.)

    The vector is either
    - ``embedding_source="joint"``: computed from the reference by a jointly trained
      :class:`~usef.modules.speaker_encoder.SpeakerEncoder` on the shared encoder's features
      (SpeakerBeam style); a caller may still pass ``embedding=`` to override it; or
    - ``embedding_source="precomputed"``: passed in by the caller (any dimension
      ``embedding_dim``, e.g. resemblyzer's 256-d d-vector or a 192-d ECAPA vector).

    Shape:
        mixture ``(B, T_mix)``; reference ``(B, T_ref)`` (joint) or embedding ``(B, E)`` ->
        ``(B, T_mix)``.
    """

    name = "embedding"

    def __init__(
        self,
        sample_rate: int = 8000,
        n_fft: int = 128,
        hop_length: int = 64,
        win_length: int | None = None,
        encoder_channels: int = 128,
        fusion: str = "multiply",
        embedding_source: str = "joint",
        embedding_dim: int = 256,
        speaker_encoder_args: dict[str, Any] | None = None,
        separator: str = "tfgridnet",
        separator_args: dict[str, Any] | None = None,
        spectral_output: str = "mapping",
    ) -> None:
        super().__init__(sample_rate, n_fft, hop_length, win_length, encoder_channels, spectral_output)
        if embedding_source not in EMBEDDING_SOURCES:
            raise ValueError(f"embedding_source must be one of {EMBEDDING_SOURCES}, got {embedding_source!r}")
        speaker_encoder_args = dict(speaker_encoder_args or {})
        separator_args = dict(separator_args or {})
        self.embedding_source = embedding_source
        self.embedding_dim = embedding_dim
        self.needs_reference = embedding_source == "joint"
        self.speaker_encoder = (
            SpeakerEncoder(encoder_channels, self.stft.num_bins, embedding_dim=embedding_dim, **speaker_encoder_args)
            if embedding_source == "joint"
            else None
        )
        self.fusion = EmbeddingFusion(fusion, encoder_channels, embedding_dim)
        self.separator = build_separator(separator, self.fusion.out_channels, self.stft.num_bins, separator_args)
        self.config.update({
            "fusion": fusion, "embedding_source": embedding_source, "embedding_dim": embedding_dim,
            "speaker_encoder_args": speaker_encoder_args, "separator": separator, "separator_args": separator_args,
        })

    def prepare_condition(
        self,
        reference: torch.Tensor | None = None,
        reference_lengths: torch.Tensor | None = None,
        embedding: torch.Tensor | None = None,
    ) -> Condition:
        if embedding is not None:
            if embedding.dim() != 2 or embedding.shape[1] != self.embedding_dim:
                raise ValueError(
                    f"embedding must be (B, {self.embedding_dim}), got shape {tuple(embedding.shape)}"
                )
            return {"embedding": embedding.float()}
        if self.speaker_encoder is None:
            raise ValueError(
                f"this model is conditioned on a pre-computed {self.embedding_dim}-d speaker embedding: "
                "pass embedding="
            )
        if reference is None:
            raise ValueError("pass reference= (a recording of the target speaker) or embedding=")

        features, frame_lengths, _ = self.encode_reference(reference, reference_lengths)
        return {"embedding": self.speaker_encoder(features, frame_lengths)}
        # (B, E)

    def enrollment_state(
        self, reference: torch.Tensor, reference_lengths: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The average of the clips' speaker vectors (how speaker verification enrols several
        utterances); only models with a jointly trained speaker encoder compute it themselves.

        Shape:
            reference ``(N, T_ref)`` samples, reference_lengths ``(N,)`` -> ``embedding`` ``(E,)``.
        """
        if self.speaker_encoder is None:
            raise ValueError(
                f"this model is conditioned on a pre-computed {self.embedding_dim}-d speaker embedding: "
                "its enrollment averages the embedder's vectors of the clips"
            )
        features, frame_lengths, _ = self.encode_reference(reference, reference_lengths)
        vectors = self.speaker_encoder(features, frame_lengths)
        # (N, E)
        return {"embedding": vectors.mean(dim=0)}

    def enrollment_condition(self, states: list[dict[str, torch.Tensor]]) -> Condition:
        """Stack a batch of enrolled vectors.

        Shape:
            states: ``B`` dicts with ``embedding`` ``(E,)`` -> ``embedding`` ``(B, E)``.
        """
        return self.prepare_condition(embedding=torch.stack([state["embedding"] for state in states]))

    def condition(self, features: torch.Tensor, condition: Condition) -> torch.Tensor:
        # features (B, C, T_mix, F)
        embedding = condition["embedding"]
        if embedding.shape[0] == 1 and features.shape[0] > 1:
            embedding = embedding.expand(features.shape[0], -1)
        return self.fusion(features, embedding)
        # (B, C or 2C, T_mix, F)
