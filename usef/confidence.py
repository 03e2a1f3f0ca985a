"""How far to trust an extraction: a confidence in [0, 1] that the output is the enrolled talker.

The model checks its own work with two more passes, reusing the prepared condition (the
reference side is not recomputed):

- ``output_db``: the output's energy relative to the mixture. A model trained with
  target-absent mixtures (``data.mix.p_target_absent``, scale-dependent loss) answers
  "the enrolled talker is not here" with near silence.
- ``keep_db``: the output is fed back as a mixture. If it is the enrolled talker, the model
  keeps it (about 0 dB); if the first pass extracted the wrong talker, a model that learned
  target-absent mixtures drops it.
- ``leak_db``: the residual (mixture minus output) is fed back. If the first pass was right,
  the residual holds the other talkers and the model drops it; if it took the wrong talker,
  the residual holds the enrolled one and the model keeps it.

These three are relative cues: the same model compares the mixture's own talkers against the
reference, which is the discrimination extraction needs, rather than an absolute speaker-
verification score. A logistic map turns them into a probability. Its weights are fitted on a
dev set per model (``tools/fit_confidence.py``) and stored in the model's ``config.yaml``
under ``confidence``; a model without them cannot give a confidence.

Energies are summed over chunks before the ratios are taken, so a long file gets one value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["ENERGY_COLUMNS", "FEATURES", "ConfidenceMap", "energies", "features", "fit", "roc_auc"]

FEATURES = ("output_db", "keep_db", "leak_db")
# per item, summed over chunks: mixture, output, output re-extracted, residual, residual re-extracted
ENERGY_COLUMNS = ("mixture", "output", "kept", "residual", "leaked")
_FLOOR_DB = -60.0  # ratios of (near) silent signals: clamp, never -inf


@torch.inference_mode()
def energies(model: torch.nn.Module, mixtures: torch.Tensor, condition: Any, estimates: torch.Tensor) -> np.ndarray:
    """The five energies of :data:`ENERGY_COLUMNS` for a batch, in float64.

    ``estimates`` is the model's own output on ``mixtures`` with ``condition`` (before any
    level change), so that the residual is what the model left out.

    Shape:
        mixtures, estimates: (B, T_mix) -> (B, 5)
    """
    if mixtures.shape != estimates.shape or mixtures.dim() != 2:
        raise ValueError(f"mixtures and estimates must both be (B, T_mix), got {tuple(mixtures.shape)} "
                         f"and {tuple(estimates.shape)}")
    residual = mixtures - estimates
    kept = model.extract(estimates, condition)[:, : mixtures.shape[1]]
    leaked = model.extract(residual, condition)[:, : mixtures.shape[1]]

    def energy(x: torch.Tensor) -> torch.Tensor:
        return x.double().pow(2).sum(dim=1)

    return torch.stack([energy(mixtures), energy(estimates), energy(kept), energy(residual), energy(leaked)],
                       dim=1).cpu().numpy()


def _ratio_db(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = 10.0 * np.log10(numerator / denominator)
    return np.clip(np.nan_to_num(ratio, nan=_FLOOR_DB, neginf=_FLOOR_DB, posinf=-_FLOOR_DB), _FLOOR_DB, -_FLOOR_DB)


def features(energy: np.ndarray) -> np.ndarray:
    """``output_db, keep_db, leak_db`` from summed energies.

    Shape:
        energy: (N, 5) (columns :data:`ENERGY_COLUMNS`) -> (N, 3) (columns :data:`FEATURES`)
    """
    energy = np.asarray(energy, dtype=np.float64)
    if energy.ndim != 2 or energy.shape[1] != len(ENERGY_COLUMNS):
        raise ValueError(f"energy must be (N, {len(ENERGY_COLUMNS)}), got {energy.shape}")
    mix, out, kept, res, leaked = energy.T
    return np.stack([_ratio_db(out, mix), _ratio_db(kept, out), _ratio_db(leaked, res)], axis=1)


@dataclass(frozen=True)
class ConfidenceMap:
    """``sigmoid(weights . features + bias)``: features in dB (:data:`FEATURES`) -> [0, 1]."""

    weights: tuple[float, ...]
    bias: float
    threshold: float = 0.5  # the operating point stored with the fit (see choose_threshold)

    def __post_init__(self) -> None:
        if len(self.weights) != len(FEATURES):
            raise ValueError(f"confidence weights must be {len(FEATURES)} numbers ({', '.join(FEATURES)}), "
                             f"got {len(self.weights)}")
        if not all(math.isfinite(w) for w in (*self.weights, self.bias, self.threshold)):
            raise ValueError("confidence weights, bias and threshold must be finite")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"confidence threshold must lie in [0, 1], got {self.threshold}")

    def __call__(self, feats: np.ndarray) -> np.ndarray:
        """Shape: feats (N, 3) -> (N,) in [0, 1]."""
        z = np.asarray(feats, dtype=np.float64) @ np.asarray(self.weights) + self.bias
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))

    def to_dict(self) -> dict[str, Any]:
        return {"features": list(FEATURES), "weights": [float(w) for w in self.weights], "bias": float(self.bias),
                "threshold": float(self.threshold)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> ConfidenceMap:
        if not isinstance(data, Mapping) or list(data.get("features", [])) != list(FEATURES):
            raise ValueError(f"{source}: 'confidence' must map features {list(FEATURES)} to weights")
        try:
            return cls(tuple(float(w) for w in data["weights"]), float(data["bias"]),
                       float(data.get("threshold", 0.5)))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{source}: bad 'confidence' entry: {exc}") from None


def fit(feats: np.ndarray, labels: Sequence[int], l2: float = 1e-2, iterations: int = 50) -> ConfidenceMap:
    """L2-regularised logistic regression by Newton steps (NumPy only).

    ``labels``: 1 for an output that is the enrolled talker, 0 for a confused output or a
    target-absent mixture. The features are used as they are (dB), so the weights read as
    "per dB".

    Shape:
        feats: (N, 3); labels: (N,)
    """
    x = np.asarray(feats, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(FEATURES) or y.shape != (x.shape[0],):
        raise ValueError(f"fit needs feats (N, {len(FEATURES)}) and labels (N,), got {x.shape} and {y.shape}")
    if len(np.unique(y)) != 2:
        raise ValueError("fit needs both classes among the labels")
    design = np.hstack([x, np.ones((len(x), 1))])
    theta = np.zeros(design.shape[1])
    penalty = l2 * np.eye(design.shape[1])
    penalty[-1, -1] = 0.0  # the bias is not shrunk
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ theta, -50, 50)))
        gradient = design.T @ (p - y) + penalty @ theta
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + penalty
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.max(np.abs(step)) < 1e-9:
            break
    return ConfidenceMap(tuple(theta[:-1]), float(theta[-1]))


def choose_threshold(scores: Sequence[float], labels: Sequence[int], max_false_alarm: float | None = None) -> float:
    """An operating point on fitting scores.

    With ``max_false_alarm`` (a share in [0, 1]): the lowest threshold at which at most that
    share of the negatives (confused outputs, target-absent mixtures) is accepted, which keeps
    the most positives at that false-alarm rate. Without it: the threshold that maximises
    Youden's J (accepted positives minus accepted negatives, each as a share), the point
    farthest above chance on the ROC curve. An item is accepted when ``score >= threshold``;
    the threshold is placed halfway between neighbouring scores so that it does not sit on
    one item.

    Shape:
        scores, labels: (N,)
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    if s.shape != y.shape or not y.any() or y.all():
        raise ValueError("choose_threshold needs scores and labels of one shape with both classes")
    if max_false_alarm is not None and not 0.0 <= max_false_alarm <= 1.0:
        raise ValueError(f"max_false_alarm must lie in [0, 1], got {max_false_alarm}")
    values = np.unique(s)
    candidates = np.concatenate([[values[0]], (values[1:] + values[:-1]) / 2, [np.nextafter(values[-1], 2.0)]])
    accepted_pos = (s[y][None, :] >= candidates[:, None]).mean(axis=1)
    accepted_neg = (s[~y][None, :] >= candidates[:, None]).mean(axis=1)
    if max_false_alarm is None:
        best = int(np.argmax(accepted_pos - accepted_neg))
    else:
        # accepted_neg falls as the threshold rises: the first candidate within the limit
        best = int(np.argmax(accepted_neg <= max_false_alarm + 1e-12))
    return float(np.clip(candidates[best], 0.0, 1.0))


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Area under the ROC curve: the chance that a random positive scores above a random
    negative (ties count half); nan without both classes.

    Shape:
        scores, labels: (N,)
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in shape: {s.shape} vs {y.shape}")
    pos, neg = s[y], s[~y]
    if not len(pos) or not len(neg):
        return float("nan")
    # rank-sum (Mann-Whitney U) with average ranks for ties
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    values = np.concatenate([pos, neg])[order]
    ranks = np.empty(len(values))
    start = 0
    while start < len(values):
        stop = start
        while stop + 1 < len(values) and values[stop + 1] == values[start]:
            stop += 1
        ranks[start : stop + 1] = 0.5 * (start + stop) + 1.0
        start = stop + 1
    rank_of = np.empty(len(values))
    rank_of[order] = ranks
    u = rank_of[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))
