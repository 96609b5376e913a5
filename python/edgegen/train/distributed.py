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


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name) or str(default)
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}: expected an integer (as torchrun sets it), got {value!r}") from None


def env_world() -> int:
    """The number of processes as torchrun sets it (WORLD_SIZE; 1 outside torchrun)."""
    world = _env_int("WORLD_SIZE", 1)
    if world < 1:
        raise ValueError(f"WORLD_SIZE: expected >= 1, got {world}")
    return world


def env_rank() -> int:
    """This process's rank as torchrun sets it (RANK; 0 outside torchrun). A RANK outside
    0 .. WORLD_SIZE - 1 (a stray RANK left in the environment of a one-process run, WORLD_SIZE
    unset) is a ValueError naming both: such a process would train but write nothing."""
    rank, world = _env_int("RANK", 0), env_world()
    if not 0 <= rank < world:
        raise ValueError(f"RANK: {rank} with WORLD_SIZE {world} (unset means 1); expected 0 <= RANK < WORLD_SIZE: "
                         "unset RANK for a one-process run, or launch with torchrun")
    return rank


class Processes:
    """This process's place in the run: ``world`` processes (WORLD_SIZE), this one ``rank``
    (RANK), on ``device``. With several processes the process group is started (gloo on CPU,
    NCCL on GPU, one GPU per LOCAL_RANK)."""

    def __init__(self, device: torch.device):
        self.world = env_world()
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
