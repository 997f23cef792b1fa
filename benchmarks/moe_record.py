"""Recording every expert neuron of a mixture of experts against a bare forward, in one process (issue 31; goal:
record <= 1.10x the bare forward). `--device cuda` measures a GPU.

OLMoE's routing shape (64 experts, 8 chosen a token) at a width that fits 2 CPU cores: `--layers` layers (default
2), d_model `--d-model` (512), d_ff 256 an expert, random weights, batches of 8 x 256 tokens. The bare forward is the
model's own `model(input_ids, attention_mask)` with the experts implementation transformers selected (grouped
matmuls); `record_experts` computes only the chosen experts (its eager loop) and keeps, per group, layer, expert and
neuron, a firing count (int64) and a sum (float64). Prints tokens per second of each, the statistics' bytes per
expert neuron, and the ratio (record / bare) on the last line.
"""

from __future__ import annotations

import argparse

import torch
from _common import BATCH, LENGTH, bench_device, char_tokenizer, interleaved, texts

import neuronlab as nl

N_BATCHES = 3


def olmoe_shaped(layers: int, d_model: int):
    from transformers import AutoModelForCausalLM, OlmoeConfig

    config = OlmoeConfig(
        vocab_size=128,
        hidden_size=d_model,
        intermediate_size=256,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=8,
        num_experts=64,
        num_experts_per_tok=8,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=512)
    args, _ = parser.parse_known_args()
    device = bench_device()
    model, tok = olmoe_shaped(args.layers, args.d_model).to(device), char_tokenizer()
    corpus = texts(BATCH * N_BATCHES)
    ids = torch.tensor(tok(corpus)["input_ids"])
    mask = torch.ones(BATCH, LENGTH, dtype=torch.long)

    def bare():
        with torch.no_grad():
            for b in ids.split(BATCH):
                model(input_ids=b.to(device), attention_mask=mask.to(device), use_cache=False)

    def recorded():
        return nl.record_experts(model, tok, {"x": corpus}, batch_size=BATCH, max_length=LENGTH, progress=False)

    best = interleaved({"bare": bare, "record": recorded})
    tokens = BATCH * N_BATCHES * LENGTH
    for k, t in best.items():
        print(f"{k:>8}: {tokens / t:10.0f} tokens/s ({device}, experts: {model.config._experts_implementation})")
    stats = recorded()
    per_neuron = (stats.active.element_size() + stats.sum.element_size()) * stats.active[0].numel()
    print(f"statistics: {per_neuron / stats.active[0].numel():.0f} bytes per expert neuron and group")
    print(f"record_experts / bare forward time: {best['record'] / best['bare']:.3f}")


if __name__ == "__main__":
    main()
