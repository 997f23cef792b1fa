"""Cost of learning activation scalars against plain backpropagation, in the same process (issue 5).

One training step of ActivScalar on every attn_out, ffn_out and resid site (6 layers x 16 positions) of the
GPT-2-architecture model (6 layers, d_model 512, vocab 8192) on 32 prompts of 16 tokens: forward with the
scalar hooks, the three-part loss on the last position, backward into the scalars, Adam step. The baseline
is the plain model's forward and backward on the same batch (gradients into the input embeddings only, so
it also skips the weight gradients). Target: the step >= 0.8 of the baseline's throughput.
Prints the ratio (baseline time / step time) on the last line.
"""

from __future__ import annotations

import torch
from _common import bench_device, gpt2_model, interleaved

from neuronlab.learn.contrast_items import Encoded
from neuronlab.learn.scalars import ScalingConfig, init_scaling, objective


def main() -> None:
    device = bench_device()
    model = gpt2_model().to(device)
    model.requires_grad_(False)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 8192, (32, 16), generator=gen).to(device)
    enc = Encoded(
        ids.tolist(), torch.randint(3, 8192, (32,), generator=gen), torch.randint(3, 8192, (32,), generator=gen)
    )
    cfg = ScalingConfig(positions=16)
    scaling = init_scaling(model, cfg, 16)
    opt = torch.optim.Adam(list(scaling.params.values()), lr=cfg.lr)
    with torch.no_grad():
        z0 = model(input_ids=ids).logits[:, -1].float()
    embed = model.get_input_embeddings()

    def step():
        out = objective(model, scaling, enc, z0, list(range(32)), cfg)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()

    def baseline():
        x = embed(ids).detach().requires_grad_(True)
        z = model(inputs_embeds=x).logits[:, -1].float()
        torch.nn.functional.softplus(z[:, 0] - z[:, 1]).mean().backward()

    best = interleaved({"baseline": baseline, "step": step}, rounds=5)
    print(f"sites: {len(scaling.params)}, scalars: {scaling.n_parameters()}")
    print(f"activscalar training step / plain forward+backward throughput: {best['baseline'] / best['step']:.3f}")


if __name__ == "__main__":
    main()
