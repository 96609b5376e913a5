"""Where a run computes: the device from ``train.device``, and data parallelism under torchrun
(every process computes the same global batch and trains on its rows of it)."""

from __future__ import annotations

import os

import torch
from torch import nn


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"train.device: {exc}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device: {name!r} asked for, but no CUDA device is available")
    return dev


def env_rank() -> int:
    """This process's rank as torchrun sets it (RANK; 0 outside torchrun)."""
    return int(os.environ.get("RANK") or 0)


class Processes:
    """This process's place in the run: ``world`` processes (WORLD_SIZE), this one ``rank``
    (RANK), on ``device``. With several processes the process group is started (gloo on CPU,
    NCCL on GPU, one GPU per LOCAL_RANK)."""

    def __init__(self, device: torch.device):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = env_rank()
        self.device = device
        if self.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            if device.type == "cuda":
                self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
                torch.cuda.set_device(self.device)

    @property
    def main(self) -> bool:
        """The process that writes checkpoints and logs."""
        return self.rank == 0

    def wrap(self, modules: dict[str, nn.Module]) -> dict[str, nn.Module]:
        """The modules as the training step calls them: DistributedDataParallel around every
        trainable one when there are several processes."""
        if self.world == 1:
            return dict(modules)
        from torch.nn.parallel import DistributedDataParallel as DDP

        return {k: DDP(m, device_ids=[self.device.index] if self.device.type == "cuda" else None)
                if any(p.requires_grad for p in m.parameters()) else m for k, m in modules.items()}

    def rows(self):
        """This process's rows of a global batch (None: all of them)."""
        return None if self.world == 1 else slice(self.rank, None, self.world)
