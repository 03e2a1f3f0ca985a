"""The trainer's dev pass: SI-SDR(i), failures, confusions and absent-talker energy of fixed items."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from usef.metrics import energy_ratio_db, si_sdr
from usef.train.runtime import Dist, forward_batch, to_device, unwrap

__all__ = ["evaluate_dev"]


@torch.no_grad()
def evaluate_dev(model: torch.nn.Module, batches: Sequence[dict[str, Any]], device: torch.device,
                 autocast: Any, info: Dist) -> dict[str, Any]:
    """SI-SDR(i) of every dev item; this rank runs batches ``rank::world`` and results are
    gathered. Returns means (nan when an estimate is not finite), failure rate (SI-SDRi < 0 or
    not finite) and confusion rate (closer to the interferer than to the target, when the dev
    set has interferers), over the items whose target speaks; with target-absent items
    (``target_present`` 0) also the median output-to-mixture energy of those (``absent_energy_db``)."""
    net = unwrap(model)
    was_training = net.training
    net.eval()
    rows = []
    for index in range(info.rank, len(batches), info.world):
        batch = to_device(batches[index], device)
        with autocast:
            estimate = forward_batch(net, batch)
        estimate = estimate.float().cpu().numpy()
        lengths = batch.get("lengths")
        present = batch.get("target_present")
        for b in range(estimate.shape[0]):
            n = int(lengths[b]) if lengths is not None else estimate.shape[1]
            if not np.isfinite(estimate[b, :n]).all():  # a diverged model: report it, do not crash
                rows.append([float("nan")] * 3 + [float(present is None or bool(present[b]))])
                continue
            if present is not None and not bool(present[b]):
                ratio = energy_ratio_db(estimate[b, :n], batch["mixture"][b, :n].cpu().numpy())
                rows.append([float("nan"), ratio, float("nan"), 0.0])
                continue
            target = batch["target"][b, :n].cpu().numpy()
            out = si_sdr(estimate[b, :n], target)
            row = [out, out - si_sdr(batch["mixture"][b, :n].cpu().numpy(), target), float("nan")]
            if "interferer" in batch:
                row[2] = float(si_sdr(estimate[b, :n], batch["interferer"][b, :n].cpu().numpy()) > out)
            rows.append(row + [1.0])
    if info.world > 1:
        gathered: list[Any] = [None] * info.world
        dist.all_gather_object(gathered, rows)
        rows = [r for part in gathered for r in part]
    net.train(was_training)
    everything = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    arr, absent = everything[everything[:, 3] == 1.0], everything[everything[:, 3] == 0.0]
    confused = arr[:, 2][np.isfinite(arr[:, 2])]
    metrics = {
        "si_sdr": float(arr[:, 0].mean()) if len(arr) else float("nan"),
        "si_sdr_imp": float(arr[:, 1].mean()) if len(arr) else float("nan"),
        "failure_rate": float((~(arr[:, 1] >= 0)).mean()) if len(arr) else float("nan"),
        "confusion_rate": float(confused.mean()) if len(confused) else None,
        "n": len(arr),
    }
    if len(absent):  # target-absent items: output energy relative to the mixture, in dB
        metrics.update(absent_energy_db=float(np.median(absent[:, 1])), n_absent=len(absent))
    return metrics
