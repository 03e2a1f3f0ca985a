"""How a training step runs on this machine: processes (DDP), devices, autocast, the model call.

Shared by the training loop (:mod:`usef.train.trainer`) and its dev pass (:mod:`usef.train.dev`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

logger = logging.getLogger(__name__)

__all__ = ["Dist", "autocast_context", "check_embeddings", "cpu_has_native_bf16", "forward_batch", "setup_distributed",
           "to_device", "unwrap"]


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def setup_distributed(device: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
        owns = True
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    return Dist(rank, world, local_rank, dev, owns)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def forward_batch(model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    """The model on a batch: on the reference, or on the pre-computed ``embedding`` for models
    that take no reference (d-vector twins)."""
    if unwrap(model).needs_reference:
        return model(batch["mixture"], batch["reference"], batch.get("reference_lengths"))
    if "embedding" not in batch:
        raise ValueError(f"model {unwrap(model).name!r} is conditioned on a pre-computed speaker vector: "
                         "set data.dvectors to a d-vector table (tools/make_dvectors.py)")
    return model(batch["mixture"], embedding=batch["embedding"])


def check_embeddings(model: torch.nn.Module, train_set: Any) -> None:
    table = getattr(train_set, "dvectors", None)
    net = unwrap(model)
    if net.needs_reference:
        return
    if table is None:
        raise ValueError(f"model {net.name!r} is conditioned on a pre-computed speaker vector: set data.dvectors "
                         "to a d-vector table of the training speech (tools/make_dvectors.py)")
    if table.embedding_dim != net.embedding_dim:
        raise ValueError(f"data.dvectors holds {table.embedding_dim}-d vectors but model {net.name!r} takes "
                         f"embedding_dim={net.embedding_dim}; set model.args.embedding_dim")


def autocast_context(cfg: dict[str, Any], device: torch.device):
    t = cfg["train"]
    if device.type == "cuda" and t["bf16"] and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and t["bf16_cpu"]:
        if not cpu_has_native_bf16():
            # without AVX512-BF16/AMX bf16 is emulated: measured several times slower than fp32
            # on an AVX2-only AMD EPYC, so the setting would only cost time
            logger.warning("train.bf16_cpu is set but this CPU has no native bf16 (%s): training in fp32",
                           torch.backends.cpu.get_cpu_capability())
            return contextlib.nullcontext()
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
