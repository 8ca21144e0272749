"""Data-parallel training across processes and nodes (``torchrun``), for :func:`robolearn.train.trainer.train`.

``torchrun --nproc_per_node N`` (and, across nodes, its rendezvous: ``--nnodes``, ``--rdzv-backend
c10d``, ``--rdzv-endpoint HOST:PORT``) starts one process per device and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads
them and joins the process group (NCCL on CUDA, Gloo on CPU). Without them (a plain ``robolearn
train``) everything here is a no-op for one process.

Semantics (PyTorch DistributedDataParallel, Li et al., "PyTorch Distributed", VLDB 2020):
``train.batch_size`` is the global batch. Every rank draws the same global window indices from the
same seeded generator and takes its contiguous slice (:meth:`DistContext.local_slice`), the
equivalent of ``torch.utils.data.DistributedSampler`` for our with-replacement-per-step sampler
(torch's sampler walks an epoch permutation with an interleaved slice, which is not the order a
one-process run sees). DDP averages the gradients, so with equal slices and mean-reduced losses a
step is the one-process step on the global batch. The random draws inside ``compute_loss``
(diffusion noise and timesteps, crop offsets, ACT's latent) are made for the global batch on every
rank and sliced too (:class:`RankSlicedRandomness`), so an N-process run follows the one-process run
at the same global batch up to floating-point summation order (tests/test_ddp.py measures it).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from robolearn.utils.errors import ConfigError


def resolve_device(name: str, local_rank: int = 0, world_size: int = 1) -> torch.device:
    """The device of this process for ``train.device``.

    Args:
        name: ``auto`` (CUDA where available, else CPU), ``cpu``, ``mps``, ``cuda`` or ``cuda:<index>``.
        local_rank: this process's index on its node (``LOCAL_RANK``); with several processes, a
            CUDA device is ``cuda:<local_rank>``.
        world_size: number of processes.

    Raises:
        ConfigError: ``cuda`` asked for where there is none, ``cuda:<index>`` with several processes
            (each takes the GPU of its local rank), or fewer GPUs than local processes.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={name}: CUDA is not available here (use train.device=auto or cpu)")
        if world_size > 1:
            if ":" in name:
                raise ConfigError(f"train.device={name}: with {world_size} processes each uses the GPU of its "
                                  "LOCAL_RANK; set train.device=cuda or auto")
            if local_rank >= torch.cuda.device_count():
                raise ConfigError(f"LOCAL_RANK {local_rank}: this node has only {torch.cuda.device_count()} GPU(s); "
                                  "start at most that many processes per node (torchrun --nproc_per_node)")
            name = f"cuda:{local_rank}"
        elif name == "cuda":
            name = f"cuda:{torch.cuda.current_device()}"  # an index: torch.cuda.set_device needs one
        dev = torch.device(name)
        torch.cuda.set_device(dev)
        return dev
    return torch.device(name)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a data-parallel run.

    Attributes:
        rank: global index of this process, ``0 <= rank < world_size``.
        world_size: number of processes.
        local_rank: index on this node.
        device: this process's device.
        owns_group: whether :func:`init_distributed` created the process group (then :meth:`close` destroys it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs and writes checkpoints and the summary."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether there are several processes (a process group to talk to)."""
        return self.world_size > 1

    def local_batch_size(self, global_batch: int) -> int:
        """Windows per process of a global batch.

        Raises:
            ConfigError: ``global_batch`` not divisible by ``world_size``.
        """
        if global_batch % self.world_size:
            raise ConfigError(f"train.batch_size={global_batch} is the global batch and must be divisible by the "
                              f"{self.world_size} processes (WORLD_SIZE); e.g. train.batch_size="
                              f"{max(1, global_batch // self.world_size) * self.world_size}")
        return global_batch // self.world_size

    def local_slice(self, global_idx: np.ndarray) -> np.ndarray:
        """This rank's contiguous part of the global batch ``(B,)`` -> ``(B / world_size,)``."""
        b = self.local_batch_size(len(global_idx))
        return global_idx[self.rank * b : (self.rank + 1) * b]

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Mean over ranks of ``values`` (any shape; detached copy). One process: ``values``."""
        if not self.distributed:
            return values.detach()
        out = values.detach().clone()
        torch.distributed.all_reduce(out)
        return out / self.world_size

    def sliced_randomness(self, local_batch: int):
        """A context in which ``compute_loss``'s random draws are the one-process ones for this rank's
        samples (:class:`RankSlicedRandomness`); a no-op context for one process."""
        return RankSlicedRandomness(self, local_batch) if self.distributed else contextlib.nullcontext()

    def barrier(self) -> None:
        """Wait for every rank (no-op for one process)."""
        if self.distributed:
            torch.distributed.barrier()

    def check_same(self, what: str, values: np.ndarray, hint: str = "every node must train on the same data.path") -> None:
        """Raise unless ``values`` (a small float array) is equal on every rank.

        Raises:
            ConfigError: a rank differs from rank 0 (e.g. nodes that read different copies of
                ``data.path``); the message names the rank, ``what`` and ends with ``hint``.
        """
        if not self.distributed:
            return
        mine = torch.as_tensor(np.asarray(values, dtype=np.float64).ravel(), device=self.device)  # NCCL: device tensors
        gathered = [torch.zeros_like(mine) for _ in range(self.world_size)]
        torch.distributed.all_gather(gathered, mine)
        for r, g in enumerate(gathered):
            if not torch.equal(g, gathered[0]):
                raise ConfigError(f"rank {r} sees different {what} than rank 0 ({g.tolist()[:4]} vs "
                                  f"{gathered[0].tolist()[:4]}): {hint}")

    def close(self) -> None:
        """Leave the process group if :func:`init_distributed` created it."""
        if self.owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def init_distributed(device: str = "auto", global_batch: int | None = None) -> DistContext:
    """Join the process group that ``torchrun`` describes in the environment, or none for one process.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT`` through
    ``init_method="env://"``). Backend NCCL when the device is CUDA, else Gloo. A process group that
    already exists is used as it is.

    Args:
        device: ``train.device`` (see :func:`resolve_device`).
        global_batch: ``train.batch_size``, checked against ``WORLD_SIZE`` before joining (so a bad
            value fails at once on every rank instead of after the rendezvous).

    Raises:
        ConfigError: bad ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` values, a global batch the processes
            cannot split (:meth:`DistContext.local_batch_size`), or a device problem (:func:`resolve_device`).
    """
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
        local = int(os.environ.get("LOCAL_RANK", rank))
        return DistContext(rank, world, local, resolve_device(device, local, world), owns_group=False)
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as exc:
        raise ConfigError(f"torchrun environment: {exc} (RANK, WORLD_SIZE and LOCAL_RANK must be integers)") from None
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"torchrun environment: RANK={rank} must be in [0, WORLD_SIZE={world})")
    if global_batch is not None:
        DistContext(rank, world).local_batch_size(global_batch)
    dev = resolve_device(device, local, world)
    if world == 1:
        return DistContext(0, 1, local, dev)
    backend = "nccl" if dev.type == "cuda" and dist.is_nccl_available() else "gloo"
    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world,
                            **({"device_id": dev} if backend == "nccl" else {}))
    return DistContext(rank, world, local, dev, owns_group=True)


class _LossModule(torch.nn.Module):
    """``forward(batch) = policy.compute_loss(batch)``: DDP synchronises gradients of ``forward`` only."""

    def __init__(self, policy: torch.nn.Module):
        super().__init__()
        self.policy = policy

    def forward(self, batch):
        return self.policy.compute_loss(batch)


def loss_module(policy: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """A module whose ``forward(batch)`` returns ``policy.compute_loss(batch)``, wrapped in
    ``DistributedDataParallel`` when there are several processes (the constructor broadcasts rank 0's
    weights and buffers, the normalizer statistics included, so every rank starts identical)."""
    module = _LossModule(policy)
    if not ctx.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    # No BatchNorm in any policy (GroupNorm), so buffers (the normalizer) never change: no per-step broadcast.
    return DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)


_LIKE = {torch.randn_like, torch.rand_like, torch.randint_like}
_FACTORY = {torch.randn, torch.rand, torch.randint}
_SIZE = (tuple, list, torch.Size)


def _size_of(func, args: tuple, kwargs: dict) -> tuple[tuple | None, Any]:
    """``(size, put)`` of a factory call: its requested shape and a function ``put(new_size) -> (args,
    kwargs)`` that asks for another one; ``(None, None)`` when the call has no readable shape."""
    if "size" in kwargs:
        return tuple(kwargs["size"]), lambda new: (args, {**kwargs, "size": new})
    if func is torch.randint:  # randint(high, size) / randint(low, high, size)
        pos = next((i for i, a in enumerate(args) if isinstance(a, _SIZE)), None)
        if pos is None:
            return None, None
        return tuple(args[pos]), lambda new: ((*args[:pos], new, *args[pos + 1:]), kwargs)
    if len(args) == 1 and isinstance(args[0], _SIZE):  # randn((B, T, A))
        return tuple(args[0]), lambda new: ((new,), kwargs)
    if args and all(isinstance(a, int) for a in args):  # randn(B, T, A)
        return tuple(args), lambda new: ((new,), kwargs)
    return None, None


class RankSlicedRandomness(TorchFunctionMode):
    """Inside this mode, a random tensor whose leading dimension is a multiple of the local batch
    (``B_local``, or ``B_local * k`` for sample-major flattened dims such as ``(B * To)`` crops) is
    drawn at ``world_size`` times that size, and this rank keeps its contiguous slice: the values the
    one-process run draws for these samples. Every rank consumes the same random numbers, so the
    generators stay equal across ranks (and equal to a one-process run's).

    Covers ``torch.randn``, ``rand``, ``randint`` and their ``*_like`` forms (diffusion noise and
    timesteps, crop offsets, ACT's latent sample). Draws of another leading size are made as they
    are (the same on every rank, as in one process). Other random ops (dropout masks: ACT) are drawn
    at the local size from the shared generator state, so ranks use the same masks at the same local
    positions: equal in distribution to one process, not bitwise equal. With a local batch of 1
    every draw counts as per-sample.

    Args:
        ctx: the run's :class:`DistContext`.
        local_batch: windows per process this step.
    """

    def __init__(self, ctx: DistContext, local_batch: int):
        super().__init__()
        self.rank, self.world, self.b = ctx.rank, ctx.world_size, local_batch

    def _sliced(self, n: Any) -> bool:
        return self.world > 1 and isinstance(n, int) and n > 0 and n % self.b == 0

    def _cut(self, t: torch.Tensor, n: int) -> torch.Tensor:
        return t[self.rank * n : (self.rank + 1) * n]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _LIKE and args and isinstance(args[0], torch.Tensor) and args[0].dim() and self._sliced(args[0].shape[0]):
            x = args[0]
            big = x.new_empty((x.shape[0] * self.world, *x.shape[1:]))
            return self._cut(func(big, *args[1:], **kwargs), x.shape[0])
        if func in _FACTORY:
            size, put = _size_of(func, tuple(args), kwargs)
            if size and self._sliced(size[0]):
                big_args, big_kwargs = put((size[0] * self.world, *size[1:]))
                return self._cut(func(*big_args, **big_kwargs), size[0])
        return func(*args, **kwargs)


def to_device(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Move a CPU batch to ``device``: through pinned memory with a non-blocking copy on CUDA (a
    batch already pinned by DataLoader workers is not copied again)."""
    if device.type != "cuda":
        return {k: v.to(device) for k, v in batch.items()}
    return {k: (v if v.is_pinned() else v.pin_memory()).to(device, non_blocking=True) for k, v in batch.items()}


class _Windows(torch.utils.data.Dataset):
    """``dataset[idx]``: the CPU batch of windows ``idx`` (``(b,)`` int64) of a sampler, for DataLoader workers."""

    def __init__(self, data, sampler):
        self.data, self.sampler = data, sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __getitem__(self, idx):
        return self.data.batch(self.sampler, idx)


class _Draws:
    """The index sequence of a :class:`BatchStream` for its DataLoader (drawn in the main process)."""

    def __init__(self, stream: "BatchStream"):
        self.stream = stream

    def __iter__(self):
        while True:
            state, idx = self.stream._draw()
            self.stream._pending.append(state)
            yield idx


class BatchStream:
    """This rank's training batches, one per step: the global batch of ``global_batch`` window
    indices drawn from ``rng`` (``rng.choice``, without replacement unless the sampler has fewer
    windows), this rank's contiguous slice of it gathered and moved to the device.

    With ``num_workers > 0`` the windows are gathered (images copied out of the in-memory store) by
    ``torch.utils.data.DataLoader`` worker processes a few steps ahead, into pinned memory on CUDA.
    The indices are still drawn in this process, in the same order, so the batches are the same as
    with ``num_workers=0``; :meth:`rng_state` gives the generator state before the first draw not yet
    trained on, which is what a checkpoint saves (a resumed run continues with the same batches).

    Args:
        data: the run's :class:`robolearn.data.training.TrainingData` (``data.train`` is sampled).
        ctx: the run's :class:`DistContext`.
        rng: the run's ``numpy.random.Generator`` (shared: draws advance it).
        global_batch: windows per step over all ranks.
        num_workers: DataLoader worker processes (0: gather in this process, at each step).

    Raises:
        ConfigError: ``global_batch`` not divisible by the number of processes.
    """

    def __init__(self, data, ctx: DistContext, rng: np.random.Generator, global_batch: int, num_workers: int = 0):
        import collections

        ctx.local_batch_size(global_batch)
        self.data, self.ctx, self.rng, self.global_batch = data, ctx, rng, global_batch
        self._pending: collections.deque = collections.deque()
        self._loader = None
        if num_workers > 0:
            loader = torch.utils.data.DataLoader(_Windows(data, data.train), batch_size=None, sampler=_Draws(self),
                                                 num_workers=num_workers, pin_memory=ctx.device.type == "cuda",
                                                 prefetch_factor=2,
                                                 # its own generator for the workers' seeds: the run's torch
                                                 # generator (diffusion noise) must not move
                                                 generator=torch.Generator().manual_seed(0))
            self._loader = iter(loader)

    def _draw(self) -> tuple[dict, np.ndarray]:
        n = len(self.data.train)
        state = self.rng.bit_generator.state
        idx = self.rng.choice(n, size=self.global_batch, replace=n < self.global_batch)
        return state, self.ctx.local_slice(idx)

    def next(self) -> dict[str, torch.Tensor]:
        """The next step's batch ``{"obs.<key>": (b, To, ...), "action": (b, T, A)}`` on the device, ``b`` the local batch."""
        if self._loader is None:
            _, idx = self._draw()
            return to_device(self.data.batch(self.data.train, idx), self.ctx.device)
        batch = next(self._loader)
        self._pending.popleft()  # the oldest draw is the batch just returned (the loader keeps the order)
        return to_device(batch, self.ctx.device)

    def rng_state(self) -> dict:
        """The generator state before the first draw whose batch was not returned yet (to checkpoint)."""
        return self._pending[0] if self._pending else self.rng.bit_generator.state

    def close(self) -> None:
        """Stop the worker processes."""
        self._loader = None  # the iterator's finaliser shuts its workers down


class NullWriter:
    """Stands in for TensorBoard's ``SummaryWriter`` and the metrics file on ranks other than 0."""

    def add_scalar(self, *args: Any, **kwargs: Any) -> None:
        pass

    def write(self, *args: Any) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass
