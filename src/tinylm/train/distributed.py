"""Data-parallel training through torchrun: one process per device, gradients averaged by DDP.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them this is a single process and every helper
here is a no-op. CPU processes talk over gloo, GPU processes over NCCL.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a process group is used: `from_env` serves the NumPy trainer too
    import torch


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Only the main process logs, evaluates into files and writes checkpoints."""
        return self.rank == 0


def from_env() -> Dist:
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    return Dist(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ["WORLD_SIZE"]))


def start(d: Dist, device: torch.device) -> None:
    if not d.enabled:
        return
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None)


def stop(d: Dist) -> None:
    if not d.enabled:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce(d: Dist, x: torch.Tensor, op: str = "sum") -> torch.Tensor:
    if not d.enabled:
        return x
    import torch.distributed as dist

    dist.all_reduce(x, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return x


def all_gather(d: Dist, x: torch.Tensor) -> list[torch.Tensor]:
    """`x` from every process (all the same shape), in rank order."""
    if not d.enabled:
        return [x]
    import torch
    import torch.distributed as dist

    out = [torch.empty_like(x) for _ in range(d.world)]
    dist.all_gather(out, x)
    return out


def barrier(d: Dist) -> None:
    if not d.enabled:
        return
    import torch.distributed as dist

    dist.barrier()
