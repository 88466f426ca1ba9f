"""Where a training process runs: its device, the torchrun process group it joins, and the
stop signals it answers by checkpointing first."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    """This process's place among the data-parallel processes (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every process (a no-op for one process)."""
        if self.world_size > 1:
            dist.barrier()


def init_distributed(device: torch.device) -> Dist:
    """Join the torchrun process group if launched by torchrun (gloo on CPU, nccl on CUDA)."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """``auto`` (this process's GPU if there is one, else Apple's MPS, else the CPU), ``cpu``,
    ``cuda``, ``cuda:N`` or ``mps``; asking for CUDA without it is a ValueError."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device(f"cuda:{local_rank}")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} requested but CUDA is not available")
    return torch.device(spec)


class StopRequest:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint at the end of the step and stops."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
