"""Multi-process training with plain PyTorch DDP, launched by ``torchrun`` (one node or several).

``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK; :func:`init` then joins the process group (NCCL on CUDA, gloo on
CPU). Every rank holds a replica of the frozen FM outside DDP and only the method (its trainable parts) is wrapped.
Each rank takes a contiguous slice of every *global* batch (``train.batch_size`` is the global batch), so a run on
W processes makes the same optimisation steps as a single-process run, up to BatchNorm statistics (computed per
slice: SyncBatchNorm needs CUDA) and float summation order. Rank 0 alone writes logs, checkpoints and results.
"""

from __future__ import annotations

import datetime
import os
from typing import Any, Iterator, Optional

import torch
import torch.distributed as dist

from reprodistill.errors import ReprodistillError


def launched() -> bool:
    """True inside a ``torchrun`` process group of more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: torch.device) -> None:
    """Join the torchrun process group once (no-op for a single process)."""
    if not launched() or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    except Exception as e:  # noqa: BLE001
        raise ReprodistillError(
            f"could not join the torchrun process group ({backend}): {e}. Check MASTER_ADDR/MASTER_PORT and that "
            "every node runs the same torchrun command with its own --node_rank"
        ) from None


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_objects(obj: Any) -> list[Any]:
    if not active():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(values: list[float]) -> list[float]:
    """Element-wise sum over ranks of a short list of numbers (float64 on CPU, so gloo and NCCL both work)."""
    if not active():
        return values
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.cpu().tolist()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class GlobalBatchSampler:
    """Batches of one rank: seeded shuffles cut into global batches, each split into W contiguous slices.

    Without ``steps_per_epoch`` an epoch is one pass over the data (a fresh shuffle per epoch). With it, the global
    batches of consecutive passes (pass p shuffled by (seed, p)) form one stream and epoch e takes its batches
    ``[e * steps_per_epoch, (e + 1) * steps_per_epoch)``: a step budget that is the same at every data size, and an
    epoch that depends on (seed, epoch) only, so a resumed run sees the same batches.

    :meth:`plan` also gives each slice's offset in its global batch and the global batch size, so per-image random
    augmentation can be drawn for the global batch and sliced: all W ranks together see exactly what one process
    would. A final global batch too small to give every rank two images (BatchNorm in training mode cannot normalise
    one) is merged into the batch before it.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        shuffle: bool,
        rank: int = 0,
        world: int = 1,
        steps_per_epoch: Optional[int] = None,
        drop_last: bool = False,
    ) -> None:
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.rank, self.world = rank, world
        self.steps_per_epoch = steps_per_epoch
        self.drop_last = drop_last  # a pass's short final batch is skipped (the next pass reshuffles everything)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _pass_batches(self, p: int) -> list[list[int]]:
        """Global batches of pass ``p`` over the data."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + p)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        batches = [order[s : s + self.batch_size] for s in range(0, self.n, self.batch_size)]
        if self.drop_last and len(batches) > 1 and len(batches[-1]) < self.batch_size:
            batches.pop()
        if len(batches) > 1 and len(batches[-1]) < 2 * self.world:
            last = batches.pop()
            batches[-1] = batches[-1] + last
        return [b for b in batches if len(b) >= self.world]

    def passes_per_epoch(self) -> float:
        """Passes over the data in one epoch."""
        if self.steps_per_epoch is None:
            return 1.0
        return self.steps_per_epoch / max(1, len(self._pass_batches(0)))

    def _global_batches(self) -> list[list[int]]:
        if self.steps_per_epoch is None:
            return self._pass_batches(self.epoch)
        per_pass = len(self._pass_batches(0))
        first = self.epoch * self.steps_per_epoch
        out: list[list[int]] = []
        cached: dict[int, list[list[int]]] = {}
        for g in range(first, first + self.steps_per_epoch):
            p = g // per_pass
            if p not in cached:
                cached = {p: self._pass_batches(p)}
            out.append(cached[p][g % per_pass])
        return out

    def plan(self) -> list[tuple[list[int], int, int]]:
        """[(indices of this rank, offset in the global batch, global batch size)] for the current epoch."""
        out = []
        for batch in self._global_batches():
            bounds = [len(batch) * r // self.world for r in range(self.world + 1)]
            lo, hi = bounds[self.rank], bounds[self.rank + 1]
            out.append((batch[lo:hi], lo, len(batch)))
        return out

    def __iter__(self) -> Iterator[list[int]]:
        return iter([p[0] for p in self.plan()])

    def __len__(self) -> int:
        return self.steps_per_epoch if self.steps_per_epoch is not None else len(self._pass_batches(0))


class MixedBatchSampler(GlobalBatchSampler):
    """Global batches that mix labelled items (dataset indices ``0..n_labelled-1``) with unlabelled ones (the indices
    after them) in a fixed proportion, each part drawn from its own stream of seeded shuffles.

    A uniform shuffle of 10% labelled images among 90% unlabelled ones would leave the supervised loss a tenth of
    each batch; a fixed share keeps it at ``1 - unlabelled_share`` of every batch whatever the pool size. An epoch
    (without ``steps_per_epoch``) is one pass over the labelled images. Within a global batch the two parts are
    interleaved evenly, so each rank's contiguous slice holds both in about the global proportion.
    """

    def __init__(
        self,
        n_labelled: int,
        n_unlabelled: int,
        batch_size: int,
        unlabelled_share: float,
        seed: int,
        rank: int = 0,
        world: int = 1,
        steps_per_epoch: Optional[int] = None,
    ) -> None:
        if n_labelled < 1 or n_unlabelled < 1:
            raise ValueError(f"need labelled and unlabelled items, got {n_labelled} and {n_unlabelled}")
        b_u = min(batch_size - 1, max(1, round(batch_size * unlabelled_share)))
        labelled = GlobalBatchSampler(n_labelled, batch_size - b_u, seed, True)
        spe = steps_per_epoch if steps_per_epoch is not None else len(labelled._pass_batches(0))
        labelled.steps_per_epoch = spe
        # the unlabelled part keeps its size in every batch (a pool smaller than b_u gives all of it)
        unlabelled = GlobalBatchSampler(n_unlabelled, b_u, seed + 1_000_033, True, steps_per_epoch=spe, drop_last=True)
        self.streams = (labelled, unlabelled)
        super().__init__(n_labelled + n_unlabelled, batch_size, seed, True, rank, world, spe)
        self.n_labelled = n_labelled

    def passes_per_epoch(self) -> float:
        return self.streams[0].passes_per_epoch()

    def _global_batches(self) -> list[list[int]]:
        for s in self.streams:
            s.set_epoch(self.epoch)
        out = []
        for lab, unl in zip(*(s._global_batches() for s in self.streams), strict=True):
            keyed = [((i + 0.5) / len(lab), j) for i, j in enumerate(lab)]
            keyed += [((i + 0.5) / len(unl), self.n_labelled + j) for i, j in enumerate(unl)]
            out.append([j for _, j in sorted(keyed, key=lambda kv: kv[0])])
        return out


def shard_indices(n: int, rank_: Optional[int] = None, world: Optional[int] = None) -> list[int]:
    """This rank's share of an evaluation set: a contiguous block, so gathered results keep the data order."""
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    return list(range(n * r // w, n * (r + 1) // w))
