"""Tokens per second of `record` with 1 and 2 ranks (torch.distributed) on the same corpus (issue 13).

Each rank runs one thread (CPU) or one GPU (`--device cuda`, nccl); the time is that of `nl.record` alone, from a
barrier to the slowest rank's end (process start and model loading excluded), best of `--rounds`, the two sizes
measured in alternation. GPT-2 architecture 6 x 512, random weights, 96 texts of 256 tokens, batches of 8.
On 2 CPU cores the ideal ratio is near 2.

    python benchmarks/record_scaling.py [--device cuda] [--ranks 2]
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _common import BATCH, LENGTH, char_tokenizer, gpt2_model, texts

import neuronlab as nl

N_TEXTS = 96


def _rank(rank: int, size: int, port: int, device: str, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    gpu = device.startswith("cuda")
    if gpu:
        torch.cuda.set_device(rank)
    else:
        torch.set_num_threads(1)
    dist.init_process_group("nccl" if gpu else "gloo", rank=rank, world_size=size, timeout=timedelta(seconds=120))
    model, tok = gpt2_model().to(f"cuda:{rank}" if gpu else "cpu"), char_tokenizer()
    corpus = {"x": texts(N_TEXTS)}
    nl.record(model, tok, {"x": corpus["x"][:BATCH]}, batch_size=BATCH, max_length=LENGTH, progress=False)  # warm-up
    dist.barrier()
    start = time.perf_counter()
    stats = nl.record(model, tok, corpus, batch_size=BATCH, max_length=LENGTH, progress=False, count_special=True)
    if gpu:
        torch.cuda.synchronize()
    took = torch.tensor([time.perf_counter() - start], dtype=torch.float64)
    dist.all_reduce(took, op=dist.ReduceOp.MAX)
    if rank == 0:
        out.put((float(took), int(stats.tokens.sum())))
    dist.destroy_process_group()


def _run(size: int, device: str) -> tuple[float, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.SimpleQueue()
    mp.start_processes(_rank, args=(size, port, device, out), nprocs=size, start_method="spawn")
    return out.get()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    best = {1: float("inf"), args.ranks: float("inf")}
    for _ in range(args.rounds):
        for size in best:
            took, tokens = _run(size, args.device)
            best[size] = min(best[size], took)
    for size, t in best.items():
        print(f"{size} rank(s): {tokens / t:10.0f} tokens/s ({tokens} tokens, {args.device})")
    print(f"{args.ranks} ranks / 1 rank throughput: {best[1] / best[args.ranks]:.3f}")


if __name__ == "__main__":
    main()
