"""Shared set-up for the benchmarks: the GPT-2-architecture model of issue 2 and a fair timer."""

from __future__ import annotations

import argparse
import random
import string
import time

import torch

from neuronlab.testing import char_tokenizer  # noqa: F401  (the benchmarks import it from here)

BATCH, LENGTH = 8, 256


def gpt2_model(n_layer: int = 6, d_model: int = 512, vocab: int = 8192):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=n_layer,
        n_embd=d_model,
        n_head=8,
        vocab_size=vocab,
        n_positions=1024,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return GPT2LMHeadModel(config).eval()


def texts(n: int, length: int = LENGTH - 1, seed: int = 0) -> list[str]:
    """n texts of `length` characters: with the character tokenizer and BOS, exactly `length + 1` tokens."""
    rng = random.Random(seed)
    return ["".join(rng.choice(string.ascii_lowercase + " ") for _ in range(length)) for _ in range(n)]


def best_time(fn, repeats: int = 3) -> float:
    """Shortest of `repeats` timed runs after one warm-up: the least noisy estimate on a shared machine."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_device() -> str:
    """The --device of the command line (default cpu, with two threads as on the development machines)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    device = parser.parse_known_args()[0].device
    if device == "cpu":
        torch.set_num_threads(2)
    return device


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()  # GPU work is asynchronous: time it to its end


def interleaved(fns: dict, rounds: int = 3) -> dict[str, float]:
    """Best time of each function, measured in alternation so drifts in machine load hit all alike."""
    for fn in fns.values():
        fn()
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            _sync()
            start = time.perf_counter()
            fn()
            _sync()
            best[k] = min(best[k], time.perf_counter() - start)
    return best
