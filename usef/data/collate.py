"""Batching of example dicts (see the data contract in docs/architecture.md)."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral, Real

import numpy as np
import torch

__all__ = ["collate_examples"]


def _pad_stack(arrays: list[np.ndarray]) -> torch.Tensor:
    out = torch.zeros(len(arrays), max(len(a) for a in arrays), dtype=torch.float32)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = torch.from_numpy(np.asarray(a, dtype=np.float32))
    return out


def collate_examples(examples: Sequence[dict], pad_fixed: bool = False) -> dict[str, object]:
    """Stack example dicts into a batch.

    ``reference`` is zero-padded at the end to the longest and ``reference_lengths``
    (int64) records the true lengths. Other arrays (``mixture``, ``target``,
    ``interferer``, ``noise``, ...) must share one length, unless ``pad_fixed`` is
    set: then they are zero-padded too and ``lengths`` (int64) holds the mixture
    lengths, for whole-utterance evaluation batches. Integers become int64
    tensors, floats float32 tensors, strings stay a list.

    Shape:
        mixture, target, interferer, noise: (T,) each -> (B, T_mix) float32;
        reference: (T_ref,) each -> (B, T_ref) float32; reference_lengths: (B,) int64.
    """
    if not examples:
        raise ValueError("examples must not be empty")
    keys = list(examples[0])
    for i, ex in enumerate(examples):
        if set(ex) != set(keys):
            raise ValueError(f"examples[{i}] has keys {sorted(ex)}, examples[0] has {sorted(keys)}")
    if "reference" not in keys:
        raise ValueError("examples lack the 'reference' field")
    batch: dict[str, object] = {}
    for key in keys:
        values = [ex[key] for ex in examples]
        first = values[0]
        if isinstance(first, np.ndarray) or torch.is_tensor(first):
            arrays = [np.asarray(v, dtype=np.float32) for v in values]
            if any(a.ndim != 1 for a in arrays):
                raise ValueError(f"field {key!r} must hold 1-D waveforms")
            lengths = [len(a) for a in arrays]
            if key == "reference":
                batch[key] = _pad_stack(arrays)
                batch["reference_lengths"] = torch.tensor(lengths, dtype=torch.int64)
            elif len(set(lengths)) == 1:
                batch[key] = torch.from_numpy(np.stack(arrays))
            elif pad_fixed:
                batch[key] = _pad_stack(arrays)
            else:
                raise ValueError(f"field {key!r} has lengths {sorted(set(lengths))}; "
                                 "pass pad_fixed=True to pad whole-utterance batches")
            if key == "mixture" and pad_fixed:
                batch["lengths"] = torch.tensor(lengths, dtype=torch.int64)
        elif isinstance(first, Integral):
            batch[key] = torch.tensor([int(v) for v in values], dtype=torch.int64)
        elif isinstance(first, Real):
            batch[key] = torch.tensor([float(v) for v in values], dtype=torch.float32)
        else:
            batch[key] = list(values)
    return batch
