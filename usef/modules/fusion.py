"""Fusion of one speaker vector into T-F features (the embedding comparison path).

Types, after WeSep's ``SpeakerFuseLayer`` and SpeakerBeam's adaptation layers:
- ``film``: ``(1 + gamma(e)) * x + beta(e)``, gamma/beta initialised to zero so training starts
  from the unconditioned separator.
- ``multiply``: ``W(e) * x`` (SpeakerBeam's default ``mul``).
- ``concat``: ``[x; W(e)]`` tiled over time and frequency; doubles the channels, exactly like
  USEF's ``[M; S]``, so the separator input width equals the USEF model's.
The vector acts per channel and is shared over frequency and time.
"""

from __future__ import annotations

import torch
from torch import nn

FUSION_TYPES = ("film", "multiply", "concat")


class EmbeddingFusion(nn.Module):
    """Condition features on one vector per item.

    Args:
        fusion: one of ``film``, ``multiply``, ``concat``.
        channels: feature channels ``C``.
        embedding_dim: vector size ``E``.

    Shape:
        - features ``(B, C, T_mix, F)``, embedding ``(B, E)``.
        - output ``(B, C, T_mix, F)`` (film, multiply) or ``(B, 2C, T_mix, F)`` (concat).
    """

    def __init__(self, fusion: str, channels: int, embedding_dim: int) -> None:
        super().__init__()
        if fusion not in FUSION_TYPES:
            raise ValueError(f"unknown fusion {fusion!r}; choose one of {', '.join(FUSION_TYPES)}")
        self.fusion = fusion
        self.out_channels = 2 * channels if fusion == "concat" else channels
        self.proj = nn.Linear(embedding_dim, 2 * channels if fusion == "film" else channels)
        if fusion == "film":
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    def forward(self, features: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        cond = self.proj(embedding)[:, :, None, None]
        # (B, C or 2C, 1, 1)
        if self.fusion == "film":
            gamma, beta = cond.chunk(2, dim=1)
            return (1.0 + gamma) * features + beta
        if self.fusion == "multiply":
            return cond * features
        return torch.cat((features, cond.expand_as(features)), dim=1)
