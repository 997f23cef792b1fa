"""Data parallelism over torch.distributed: which share of a corpus a process takes, and combining what ranks found.

    torchrun --nproc-per-node 2 -m neuronlab record --model M --text-dir DIR --out S   # one file, as one process
    torch.distributed.init_process_group("gloo")   # or let a command do it: init_from_env()
    stats = nl.record(model, tok, texts)            # every rank returns the combined stats

Nothing here starts processes: torchrun, `accelerate launch` or a cluster script does, and `init_from_env` joins the
group they describe in the environment (RANK, WORLD_SIZE, MASTER_ADDR, ...): nccl where the model runs on a GPU,
gloo on CPUs. A rank takes every `world`-th text of each group (the first `first` texts all go to rank 0, which
keeps per-text rows for them), so shards are deterministic, balanced, and need no length of the corpus.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch


def world() -> tuple[int, int]:
    """(rank, number of ranks) of the initialised process group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def launched() -> bool:
    """Whether a launcher (torchrun, accelerate launch) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_device(device: str | None) -> str | None:
    """`cuda` -> `cuda:LOCAL_RANK` under a launcher (one GPU per process); anything else unchanged."""
    if device == "cuda" and launched():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def init_from_env(device: str | None = None) -> None:
    """Join the process group a launcher describes (no-op in a single process or when already joined)."""
    import torch.distributed as dist

    if not launched() or dist.is_initialized():
        return
    gpu = device is not None and device.startswith("cuda")
    if gpu:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if gpu else "gloo")


def quiet_other_ranks() -> None:
    """Under a launcher, let only rank 0 print to stdout (the results are the same on every rank); errors and
    warnings still reach stderr from every rank."""
    import sys

    if world()[0] != 0:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (for the life of the process)


def setup_run(device: str | None = None) -> dict[str, str | None]:
    """model, tok = nl.load_model("M", **nl.setup_run("cuda"))   # under torchrun: cuda:LOCAL_RANK, one GPU a rank

    Ready this process to load a command's model on `device`, and say where: the keywords for `load_model`.
    Under a launcher it joins the process group (nccl on GPUs, gloo on CPUs) and lets only rank 0 print; "auto"
    (one model spread over every GPU) is refused there, as each rank would spread its own copy."""
    if device == "auto" and launched():
        from neuronlab.errors import NeuronlabError

        raise NeuronlabError(
            "--device auto spreads one model over every GPU, and a launcher starts one process "
            "per GPU: use --device cuda under torchrun (each rank its own GPU), or --device auto "
            "in one process for a model larger than a GPU"
        )
    init_from_env(device)
    quiet_other_ranks()
    return {"device_map": "auto"} if device == "auto" else {"device": local_device(device)}


def collective_device() -> torch.device:
    """Where tensors must be for the group's collectives (nccl: this rank's GPU)."""
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """`t` reduced over all ranks (sum or max), as a new CPU tensor; `t` itself is left as it was."""
    import torch.distributed as dist

    x = t.to(collective_device(), copy=True)
    dist.all_reduce(x, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return x.cpu()


def all_gather(t: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's `t` (same shape and dtype on every rank), in rank order, as CPU tensors."""
    import torch.distributed as dist

    x = t.to(collective_device(), copy=True)
    parts = [torch.empty_like(x) for _ in range(world()[1])]
    dist.all_gather(parts, x)
    return [p.cpu() for p in parts]


def broadcast(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank `src`'s `t` on every rank (every rank passes a tensor of the same shape and dtype)."""
    import torch.distributed as dist

    x = t.to(collective_device(), copy=True)
    dist.broadcast(x, src)
    return x.cpu()


def barrier() -> None:
    import torch.distributed as dist

    if world()[1] > 1:
        dist.barrier()


def in_blocks(items: Sequence, fn: Callable[[Sequence], Sequence]) -> list:
    """`fn(items)` as a list, computed with each rank taking a contiguous block of the items: every rank gets all
    the results, in the items' order (one process: just `fn(items)`)."""
    import torch.distributed as dist

    rank, size = world()
    if size == 1:
        return list(fn(items))
    lo, hi = rank * len(items) // size, (rank + 1) * len(items) // size
    parts: list[list] = [[] for _ in range(size)]
    dist.all_gather_object(parts, list(fn(items[lo:hi])) if hi > lo else [])
    return [x for part in parts for x in part]


def rank_path(path: str | Path, rank: int, size: int) -> Path:
    """This rank's own checkpoint beside `path` (NAME.rankRofN.ext), until the ranks combine their results into
    `path`; an error where checkpoints of a run with another number of ranks lie there (they would be ignored)."""
    from neuronlab.errors import NeuronlabError

    path = Path(path)
    others = [p.name for p in rank_files(path) if not p.name.endswith(f"of{size}{path.suffix}")]
    if others:
        raise NeuronlabError(
            f"{', '.join(sorted(others))} hold a run with another number of processes: resume "
            "with that many, or delete them to start over"
        )
    return path.with_name(f"{path.stem}.rank{rank}of{size}{path.suffix}")


def rank_files(path: str | Path) -> list[Path]:
    """The per-rank checkpoints (NAME.rankRofN.ext) lying beside `path`: a run of several ranks not yet finished."""
    path = Path(path)
    return sorted(path.parent.glob(f"{path.stem}.rank*of*{path.suffix}"))


_OWN_FILES = contextvars.ContextVar("neuronlab_own_files", default=False)


def writes_here() -> bool:
    """Whether this process writes files: always in one process; under several ranks rank 0 writes the results
    (every rank computes the same) and the others only their own checkpoints, inside `own_files`."""
    return _OWN_FILES.get() or world()[0] == 0


@contextmanager
def own_files() -> Iterator[None]:
    """Inside, every rank writes its files (its own checkpoints, NAME.rankRofN)."""
    token = _OWN_FILES.set(True)
    try:
        yield
    finally:
        _OWN_FILES.reset(token)


def hand_over(mine: Path, write: Callable[[], None]) -> None:
    """Rank 0 writes the one combined file (`write()`); once it exists, every rank deletes its own checkpoint."""
    if world()[0] == 0:
        write()
    barrier()
    mine.unlink(missing_ok=True)


class Shard:
    """The texts of one rank, read lazily from any iterable (a list, a file, a streamed dataset): texts below
    `first` all go to rank 0, the rest in turn, text `i` to rank `(i - first) % size`."""

    def __init__(self, texts: Iterable[str], rank: int, size: int, first: int = 0):
        self.texts, self.rank, self.size, self.first = texts, rank, size, first

    def global_index(self, i: int) -> int:
        """The index in the whole corpus of this rank's `i`-th text."""
        if self.rank == 0 and i < self.first:
            return i
        return self.first + (i - (self.first if self.rank == 0 else 0)) * self.size + self.rank

    def __iter__(self):
        for i, text in enumerate(self.texts):
            owner = 0 if i < self.first else (i - self.first) % self.size
            if owner == self.rank:
                yield text
