"""Seconds `nl.lape` takes on Stats the size of a 70B model (issue 12; goal < 2 s on 2 cores).

Synthetic Stats: 18 languages x 80 layers x 28,672 neurons (Llama-2-70B's FFN), activation counts drawn at
random with 200 planted neurons per language that fire only for it. The floor is reading the data once:
`stats.probability` (one division over every value); the last line prints lape's time as a ratio of it.
Also timed: `Expertise.experts(0.5)` on uniform random AP of 4 concepts at the same size (half of all neurons
pass, the worst case: 1.1 million experts a concept).

    python benchmarks/select_speed.py                  # 70B size
    python benchmarks/select_speed.py --layers 8       # smaller, quicker
"""

from __future__ import annotations

import argparse

import torch
from _common import best_time

import neuronlab as nl
from neuronlab.record.stats import Stats
from neuronlab.select.experts import Expertise


def synthetic_stats(groups: int, layers: int, width: int, planted: int = 200, seed: int = 0) -> Stats:
    gen = torch.Generator().manual_seed(seed)
    names = [f"lang{g}" for g in range(groups)]
    stats = Stats.empty(names, layers, width, {"site": "act"})
    stats.tokens.fill_(100_000)
    stats.active.copy_(torch.randint(20_000, 80_000, stats.active.shape, generator=gen))
    flat = stats.active.view(groups, -1)
    for g in range(groups):
        chosen = torch.randperm(layers * width, generator=gen)[:planted]
        flat[:, chosen] = 0
        flat[g, chosen] = 99_000
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=18)
    parser.add_argument("--layers", type=int, default=80)
    parser.add_argument("--width", type=int, default=28_672)
    args = parser.parse_args()
    torch.set_num_threads(2)
    stats = synthetic_stats(args.groups, args.layers, args.width)
    result: list[nl.NeuronSet] = []
    floor = best_time(lambda: stats.probability, repeats=2)
    took = best_time(lambda: result.append(nl.lape(stats)), repeats=2)
    ns = result[-1]
    print(f"stats: {args.groups} groups x {args.layers} layers x {args.width} neurons")
    print(f"lape: {ns.meta['selected']} neurons kept, {sum(ns.total(g) for g in ns.groups)} assignments")
    print(f"read once (stats.probability): {floor:.2f} s")
    print(f"lape: {took:.2f} s")
    ex = Expertise(
        [f"c{i}" for i in range(4)],
        {"ap": torch.rand(4, args.layers, args.width, generator=torch.Generator().manual_seed(0))},
    )
    per_concept = best_time(lambda: ex.experts(0.5), repeats=1) / 4
    print(f"experts(0.5): {per_concept:.2f} s a concept")
    print(f"lape / one read of the stats: {took / floor:.1f}")


if __name__ == "__main__":
    main()
