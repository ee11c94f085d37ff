"""Data-parallel training over processes (``rerank train task|lang --processes N``), with torch.distributed.

``launch`` starts N processes on this machine (``spawn``; the gloo backend, so CPUs suffice; rendezvous on
127.0.0.1), each with ``cores / N`` threads, and runs the trainer in each. Every process builds the same model
from the same seed; each step's global batch is cut into N equal shares (:func:`shard`), every process computes
the loss and gradients of its share, and the gradients are averaged across processes before the optimizer
steps (:func:`average_grads`), so the parameters stay identical everywhere and a step equals one process's step
over the whole batch. Evaluations run on rank 0 and their figure is broadcast (:func:`from_main`), so that early
stopping and the time budget decide the same in every process; only rank 0 writes checkpoints, logs and the
module. A trainer that is not launched here sees a world of one, and none of this changes what it does.

Under ``torchrun`` (one node or several: ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` set by it),
``launch`` starts nothing: each process torchrun started joins the group through those variables and runs its
share; rank 0 returns the result, the other ranks exit quietly once the group is done.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from rerank.errors import RerankError


@dataclass
class World:
    rank: int = 0
    size: int = 1


WORLD = World()


def is_main() -> bool:
    return WORLD.rank == 0


def distributed() -> bool:
    return WORLD.size > 1


def shard(items: Sequence, *, what: str = "the batch") -> list:
    """This process's share of a global batch (every ``size``-th item from ``rank``): equal shares, so that the
    average of the processes' mean losses is the mean over the whole batch."""
    if WORLD.size == 1:
        return list(items)
    if len(items) % WORLD.size:
        raise RerankError(
            f"{what} of {len(items)} does not split into {WORLD.size} equal shares",
            hint="make the batch a multiple of --processes",
        )
    return list(items[WORLD.rank :: WORLD.size])


def average_grads(params: Iterable[torch.nn.Parameter]) -> None:
    """The gradients averaged over the processes, in one all-reduce (a missing gradient counts as zeros)."""
    if WORLD.size == 1:
        return
    import torch.distributed as dist

    plist = list(params)
    for p in plist:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1).float() for p in plist])
    dist.all_reduce(flat)
    flat /= WORLD.size
    offset = 0
    for p in plist:
        n = p.grad.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


def total(value: float) -> float:
    """The sum of ``value`` over the processes."""
    if WORLD.size == 1:
        return value
    import torch.distributed as dist

    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t[0])


def mean(value: float) -> float:
    return total(value) / WORLD.size


def from_main(fn: Callable[[], float]) -> float:
    """``fn()`` run on rank 0 only, its figure given to every process."""
    if WORLD.size == 1:
        return float(fn())
    import torch.distributed as dist

    t = torch.tensor([float(fn()) if is_main() else 0.0], dtype=torch.float64)
    dist.broadcast(t, src=0)
    return float(t[0])


def sum_tensor(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over the processes, in place (each fills its own rows, the rest zeros: a gather)."""
    if WORLD.size > 1:
        import torch.distributed as dist

        dist.all_reduce(t)
    return t


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, size: int, port: int, threads: int, fn, kwargs: dict, errors) -> None:
    import torch.distributed as dist

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", rank=rank, world_size=size)
    WORLD.rank, WORLD.size = rank, size
    try:
        fn(**({**kwargs, "progress": kwargs.get("progress", True) and rank == 0}))
    except RerankError as e:
        errors.put(str(e))
        raise SystemExit(2) from None
    finally:
        dist.destroy_process_group()


def torchrun_world() -> tuple[int, int] | None:
    """(rank, world size) when this process was started by ``torchrun`` for more than one process, else None."""
    try:
        rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    except (KeyError, ValueError):
        return None
    return (rank, size) if size > 1 and 0 <= rank < size else None


def _join(fn: Callable, kwargs: dict, rank: int, size: int):
    """Run ``fn`` as rank ``rank`` of a group torchrun started (its rendezvous from the environment)."""
    import torch.distributed as dist

    if not os.environ.get("MASTER_ADDR") or not os.environ.get("MASTER_PORT"):
        raise RerankError(
            "RANK and WORLD_SIZE are set but MASTER_ADDR/MASTER_PORT are not",
            hint="start the processes with torchrun (it sets all four), or unset RANK and WORLD_SIZE",
        )
    dist.init_process_group("gloo", init_method="env://", rank=rank, world_size=size)
    WORLD.rank, WORLD.size = rank, size
    try:
        result = fn(**({**kwargs, "progress": kwargs.get("progress", True) and rank == 0}))
    finally:
        dist.destroy_process_group()
    if rank != 0:
        raise SystemExit(0)  # rank 0 reports; the others are done
    return result


def launch(fn: Callable, kwargs: dict, processes: int):
    """Run ``fn(**kwargs)`` in ``processes`` processes (data-parallel, as above); with 1, in this process.
    Returns ``fn``'s result with 1 process, else None (rank 0 wrote what ``fn`` writes). Under torchrun, this
    process is one rank of the group torchrun started (``processes`` must be 1: torchrun decides how many)."""
    if processes < 1:
        raise RerankError(f"--processes must be ≥ 1, not {processes}", hint="e.g. --processes 2")
    world = torchrun_world()
    if world is not None:
        if processes != 1:
            raise RerankError(
                f"--processes {processes} under torchrun, which started {world[1]} processes already",
                hint="leave out --processes: torchrun's --nnodes and --nproc-per-node decide",
            )
        return _join(fn, kwargs, *world)
    if processes == 1:
        return fn(**kwargs)
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    errors = ctx.SimpleQueue()
    threads = max(1, (os.cpu_count() or processes) // processes)
    try:
        mp.start_processes(
            _worker,
            args=(processes, _free_port(), threads, fn, kwargs, errors),
            nprocs=processes,
            join=True,
            start_method="spawn",
        )
    except mp.ProcessExitedException as e:
        message = errors.get() if not errors.empty() else None
        if message:
            raise RerankError(message) from None
        raise RerankError(
            f"a training process ended with exit code {e.exit_code}",
            hint="run with --processes 1 to see its error",
        ) from None
    except mp.ProcessRaisedException as e:
        message = errors.get() if not errors.empty() else None
        raise RerankError(message or f"a training process failed: {str(e).strip().splitlines()[-1]}") from None
    return None
