"""One run on many processes: data-parallel training under ``torchrun`` (DDP; gloo on CPU, NCCL on GPU).

Launched by torchrun (``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` set), every process builds the same model
from the same seed, trains on its contiguous share of each step's global batch (``--batch-size`` is the
global batch; the data order is still a function of (seed, step) and identical to the single-process
run), and DDP averages the gradients, so a step equals the single-process step up to float rounding.
Rank 0 alone evaluates, writes checkpoints and results, tracks and prints. Time budgets are refused:
each process would measure its own seconds and they could stop at different steps.

    torchrun --nproc_per_node 2 -m ablate run --variant rope --budget 2000steps --batch-size 64
    torchrun --nnodes 2 --node_rank 0 --master_addr HOST --master_port 29500 --nproc_per_node 8 -m ablate run ...
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ablate.errors import AblateError


@dataclass(frozen=True)
class World:
    """This process's place among the data-parallel processes of a run (a single process by default)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1


def world(device: str) -> World:
    """The process group torchrun describes in the environment, joined once; a single process otherwise."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    import torch.distributed as dist

    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend)
    return World(rank, size, local)


def device_for(device: str, w: World) -> str:
    """Each process on a GPU node takes the GPU of its local rank."""
    return f"cuda:{w.local_rank}" if w.parallel and device.startswith("cuda") else device


def check_run(budget_kind: str, batch_size: int, w: World) -> None:
    """What a run on several processes needs, checked before anything is built or written."""
    if not w.parallel:
        return
    if budget_kind == "seconds":
        raise AblateError("a time budget cannot be split over processes (each measures its own seconds); "
                          "give the budget in steps, tokens or FLOPs")
    if batch_size % w.size:
        raise AblateError(f"batch_size {batch_size} does not split evenly over {w.size} processes; pick a batch "
                          f"size divisible by {w.size} (--batch-size is the global batch)")


def wrap(model: torch.nn.Module, w: World, device: str) -> torch.nn.Module:
    """The module the training steps call: DDP over the model when there are several processes."""
    if not w.parallel:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [w.local_rank] if device.startswith("cuda") else None
    return DistributedDataParallel(model, device_ids=ids)


def mean(value: torch.Tensor, w: World) -> torch.Tensor:
    """The mean of ``value`` over the processes (the global batch's loss from each share's)."""
    if not w.parallel:
        return value
    import torch.distributed as dist

    total = value.detach().clone()
    dist.all_reduce(total)
    return total / w.size


def leave(w: World) -> None:
    if w.parallel:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
