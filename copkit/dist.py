"""Many processes, one training run: torch.distributed as torchrun starts it.

``torchrun --nproc_per_node=K -m copkit <stage> ...`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``;
:func:`setup` joins the process group (gloo on the CPU, nccl on CUDA, one GPU per process). Without
torchrun everything here is a no-op for a single process, so the same code runs both ways.

How a step is split (:class:`Shard`): every process computes the *global* batch's indices and every
random draw of the step at the global batch size, from the same (seed, step) generator, and keeps
its own contiguous rows. Each process's loss is the mean over its rows; DistributedDataParallel
averages the gradients, which is then exactly the gradient of the global batch's mean loss. Hence
K processes with global batch B end with the same weights (to float round-off) as one process with
batch B, and a run can move between machine sizes and resume from the same checkpoint. Each
process reads only its own rows of the data, the rows a DistributedSampler over the step's
permutation would give it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
from torch import Tensor

from .profiles import pick_device

__all__ = ["Shard", "setup", "rank", "world_size", "is_main", "barrier", "shard", "all_mean",
           "local_device"]


@dataclass(frozen=True)
class Shard:
    """This process's rows ``[start, stop)`` of a global batch of ``total`` rows."""

    start: int
    stop: int
    total: int

    @classmethod
    def whole(cls, total: int) -> "Shard":
        return cls(0, total, total)

    @property
    def size(self) -> int:
        return self.stop - self.start

    def cut(self, x: Tensor) -> Tensor:
        """The rows of a global-batch tensor (total, ...) that belong to this process.

        >>> Shard(2, 4, 6).cut(torch.arange(6)).tolist()
        [2, 3]
        """
        if x.shape[0] != self.total:
            raise ValueError(f"expected a global batch of {self.total} rows, got {x.shape[0]}")
        return x[self.start:self.stop]


def world_size() -> int:
    """Processes in the run (1 without torchrun)."""
    return (torch_dist.get_world_size() if torch_dist.is_available()
            and torch_dist.is_initialized() else 1)


def rank() -> int:
    """This process's rank (0 without torchrun)."""
    return torch_dist.get_rank() if torch_dist.is_available() and torch_dist.is_initialized() else 0


def is_main() -> bool:
    """The process that logs, shows progress and writes files."""
    return rank() == 0


def barrier() -> None:
    """Wait for every process (nothing to wait for in a single process)."""
    if world_size() > 1:
        torch_dist.barrier()


def local_device(preference: str = "auto") -> torch.device:
    """The device of this process: under torchrun with CUDA, GPU ``LOCAL_RANK``; otherwise
    :func:`copkit.profiles.pick_device`."""
    dev = pick_device(preference)
    if dev.type == "cuda" and "LOCAL_RANK" in os.environ:
        dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(dev)
    return dev


def setup(device: torch.device) -> int:
    """Join the process group torchrun describes (nccl for CUDA, gloo otherwise) when
    ``WORLD_SIZE`` > 1 and it is not joined yet; returns the world size."""
    n = int(os.environ.get("WORLD_SIZE", "1"))
    if n > 1 and not torch_dist.is_initialized():
        torch_dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return world_size()


def shard(total: int) -> Shard:
    """This process's contiguous part of a global batch of ``total`` rows.

    The batch must split evenly (equal shards are what makes the averaged gradient the global
    batch's gradient); otherwise a ValueError says which sizes would work.
    """
    n, r = world_size(), rank()
    if total % n:
        raise ValueError(f"the global batch of {total} does not split over {n} processes; use a "
                         f"batch size that is a multiple of {n} (e.g. {total - total % n or n})")
    per = total // n
    return Shard(r * per, (r + 1) * per, total)


def all_mean(x: Tensor) -> Tensor:
    """The mean of a tensor over processes (the tensor itself in a single process)."""
    if world_size() == 1:
        return x
    y = x.detach().clone()
    torch_dist.all_reduce(y)
    return y / world_size()
