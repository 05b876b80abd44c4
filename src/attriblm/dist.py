"""torch.distributed helpers: one process per device under ``torchrun``, a no-op otherwise.

``torchrun --nproc_per_node=N -m attriblm attribute ...`` starts N processes with ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE`` set. :func:`init_from_env` joins them into one process group
(NCCL when the run's device is CUDA, gloo on CPU); without those variables (or with
``WORLD_SIZE=1``) nothing is initialised and every helper acts as the single process it is.

Work is split by *batch*: rank ``r`` of ``W`` computes batches ``r, r + W, r + 2W, …``
(:meth:`Dist.mine`), so a batch is computed with exactly the rows and padding it has in a
single-process run. Results are combined with collectives: disjoint rows by a summed
all-reduce of zero-filled tensors (exact: ``x + 0 = x``), sums (K-FAC covariances, gradients
of a data-parallel step) by an all-reduce. Rank 0 writes every output file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as torch_dist

from attriblm.errors import ConfigError

T = TypeVar("T")
ENV_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


@dataclass(frozen=True)
class Dist:
    """This process's place in the group: ``rank`` of ``world_size``; ``device`` carries the
    collectives (a CUDA device under NCCL, else CPU)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def active(self) -> bool:
        """More than one process: collectives are needed."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes outputs and shows progress."""
        return self.rank == 0

    def mine(self, items: Sequence[T]) -> list[T]:
        """This rank's share of ``items``: every ``world_size``-th, starting at ``rank``."""
        return list(items[self.rank :: self.world_size])

    def barrier(self) -> None:
        if self.active:
            torch_dist.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The elementwise sum of ``tensor`` over all ranks (a new tensor on its device)."""
        if not self.active:
            return tensor
        work = tensor.detach().to(self.device).contiguous().clone()
        torch_dist.all_reduce(work, op=torch_dist.ReduceOp.SUM)
        return work.to(tensor.device)

    def broadcast_json(self, obj: Any) -> Any:
        """Rank 0's ``obj`` (JSON-serialisable) on every rank; other ranks pass anything."""
        if not self.active:
            return obj
        payload = json.dumps(obj).encode() if self.is_main else b""
        size = torch.tensor([len(payload)], dtype=torch.int64, device=self.device)
        torch_dist.broadcast(size, src=0)
        data = torch.zeros(int(size.item()), dtype=torch.uint8, device=self.device)
        if self.is_main:
            data.copy_(torch.frombuffer(bytearray(payload), dtype=torch.uint8))
        torch_dist.broadcast(data, src=0)
        return json.loads(bytes(data.cpu().tolist()).decode())


SINGLE = Dist()


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def launched_world_size() -> int:
    """``WORLD_SIZE`` as set by torchrun (1 when not launched by it)."""
    return _env_int("WORLD_SIZE") or 1


def local_rank() -> int:
    """``LOCAL_RANK`` as set by torchrun (0 when not launched by it)."""
    return _env_int("LOCAL_RANK") or 0


def current() -> Dist:
    """The initialised process group as a :class:`Dist` (``SINGLE`` when there is none)."""
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return SINGLE
    backend = torch_dist.get_backend()
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if backend == "nccl"
        else torch.device("cpu")
    )
    return Dist(torch_dist.get_rank(), torch_dist.get_world_size(), device)


def init_from_env(device: str = "auto", timeout_s: float = 1800.0) -> Dist:
    """Join the torchrun process group (once per process); ``SINGLE`` without torchrun.

    ``device`` is the run's ``--device``: CUDA (``cuda`` or ``auto`` with a GPU) selects NCCL
    and this rank's GPU ``cuda:LOCAL_RANK``; CPU selects gloo.
    """
    world = launched_world_size()
    if world <= 1:
        return current()
    if not torch_dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if not torch_dist.is_initialized():
        use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        if use_cuda:
            if torch.cuda.device_count() <= local_rank():
                raise ConfigError(
                    f"LOCAL_RANK={local_rank()} but only {torch.cuda.device_count()} CUDA devices"
                )
            torch.cuda.set_device(local_rank())
        torch_dist.init_process_group(
            backend="nccl" if use_cuda else "gloo", timeout=timedelta(seconds=timeout_s)
        )
    return current()


def close() -> None:
    """Leave the process group (end of a torchrun command)."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
