"""Cost of interventions against the plain model in the same process (issue 2).

1% of the neurons of every layer scaled by 2 (hooks, via `apply`) and the same plan baked into weights,
on the GPT-2-architecture model (6 layers, d_model 512, vocab 8192): a forward pass over 8 x 256 tokens and
greedy generation of 32 tokens from 8 prompts of 64. Targets: hooked >= 0.95 of plain throughput; baked ~1.0.
Prints each ratio (plain time / other time), then the smallest hooked ratio on the last line.
"""

from __future__ import annotations

import torch
from _common import BATCH, LENGTH, bench_device, gpt2_model, interleaved

import neuronlab as nl


def main() -> None:
    device = bench_device()
    model = gpt2_model().to(device)
    d_ff, n_layers = 4 * 512, 6
    gen = torch.Generator().manual_seed(0)
    neurons = {layer: torch.randperm(d_ff, generator=gen)[: d_ff // 100].tolist() for layer in range(n_layers)}
    plan = nl.Plan([nl.Scale(factor=2.0, neurons=nl.NeuronSet({"x": neurons}))])
    baked = nl.bake(model, plan)
    ids = torch.randint(3, 8192, (BATCH, LENGTH), generator=gen).to(device)
    prompt = ids[:, :64]

    def forward(m):
        def run():
            with torch.no_grad():
                m(input_ids=ids, use_cache=False)

        return run

    def generate(m):
        def run():
            with torch.no_grad():
                m.generate(
                    prompt,
                    attention_mask=torch.ones_like(prompt),
                    max_new_tokens=32,
                    min_new_tokens=32,
                    do_sample=False,
                    pad_token_id=0,
                )

        return run

    def hooked(run):
        def wrapped():
            with nl.apply(model, plan):
                run()

        return wrapped

    best = interleaved(
        {
            "forward plain": forward(model),
            "forward hooked": hooked(forward(model)),
            "forward baked": forward(baked),
            "generate plain": generate(model),
            "generate hooked": hooked(generate(model)),
            "generate baked": generate(baked),
        },
        rounds=5,
    )
    ratios = {}
    for job in ("forward", "generate"):
        for kind in ("hooked", "baked"):
            ratios[f"{job} {kind}"] = best[f"{job} plain"] / best[f"{job} {kind}"]
            print(f"{job:>8} {kind:>6} / plain throughput: {ratios[f'{job} {kind}']:.3f}")
    print(
        f"hooked / plain throughput (worst of forward, generate): "
        f"{min(ratios['forward hooked'], ratios['generate hooked']):.3f}"
    )


if __name__ == "__main__":
    main()
