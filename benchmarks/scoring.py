"""Scoring on a large vocabulary (issue 22): perplexity, continuation scores (LSS) and record, each against the
forward pass it cannot avoid, measured in one process; then float32 against bfloat16.

Model: a random Gemma-3 shaped like Gemma-3-270M (d_model 640, d_ff 2048, the real 262,144-entry vocabulary) with
4 layers instead of 18 (`--layers 18` for the full depth), or with `--real` the packaged Gemma-3-270M itself
(`neuronlab models path gemma-3-270m`). Batches of 8 x 256 tokens (character tokenizer; token ids below 128).

Prints, with the goal of issue 22 beside each:
- perplexity time / plain forward with logits (`model(...).logits`, every position unembedded): goal <= 1.15;
- the same for the path before issue 22 (forward with logits, then a float32 cross-entropy over the strided
  vocabulary dimension of every position, padding included), for the before/after figure;
- continuation scores (LSS rows: 224-token prompts, 32-token continuations) / the same forward with logits;
- record time / the forward truncated after the final norm (`model.base_model`): goal <= 1.05;
- record and perplexity in bfloat16 / float32, and the perplexities' relative difference.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from _common import BATCH, LENGTH, bench_device, char_tokenizer, interleaved, texts

import neuronlab as nl

N_BATCHES = 4


def gemma_model(layers: int):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=262144,
        hidden_size=640,
        intermediate_size=2048,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        sliding_window=512,
    )
    return Gemma3ForCausalLM(config).eval()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--real", action="store_true", help="the packaged Gemma-3-270M instead of a random one")
    parser.add_argument("--layers", type=int, default=4, help="layers of the random model")
    args, _ = parser.parse_known_args()
    device = bench_device()
    if args.real:
        model, _ = nl.load_model("gemma-3-270m", dtype="float32")
    else:
        model = gemma_model(args.layers)
    model = model.to(device)
    tok = char_tokenizer()
    corpus = texts(BATCH * N_BATCHES)
    ids = torch.tensor(tok(corpus)["input_ids"])
    assert ids.shape == (BATCH * N_BATCHES, LENGTH)
    mask = torch.ones(BATCH, LENGTH, dtype=torch.long, device=device)
    batches = [b.to(device) for b in ids.split(BATCH)]

    def forward(m, logits=True):
        def run():
            with torch.no_grad():
                for b in batches:
                    out = m(input_ids=b, attention_mask=mask, use_cache=False)
                    if logits:
                        out.logits.sum()

        return run

    def before():  # the scoring path before issue 22
        with torch.no_grad():
            for b in batches:
                logits = model(input_ids=b, attention_mask=mask, use_cache=False).logits[:, :-1]
                F.cross_entropy(logits.float().transpose(1, 2), b[:, 1:], reduction="none").sum()

    def ppl(m):
        return lambda: nl.perplexity(m, tok, corpus, batch_size=BATCH, max_length=LENGTH)

    def rec(m):
        return lambda: nl.record(
            m, tok, {"x": corpus}, site="act", batch_size=BATCH, max_length=LENGTH, progress=False, count_special=True
        )

    prompts, conts = [t[:223] for t in corpus], [t[223:] for t in corpus]  # 224 + 32 tokens with BOS
    cont = lambda: nl.continuation_logprob(model, tok, prompts, conts, batch_size=BATCH)  # noqa: E731
    best = interleaved(
        {
            "forward with logits": forward(model),
            "truncated forward": forward(model.base_model, False),
            "perplexity": ppl(model),
            "perplexity before": before,
            "continuations": cont,
            "record": rec(model),
        },
        rounds=2,
    )
    tokens = BATCH * N_BATCHES * LENGTH
    name = "Gemma-3-270M (Q4_K_M dequantized)" if args.real else f"random Gemma-3, {args.layers} layers, vocab 262144"
    print(f"{name}, {device}, {N_BATCHES} batches of {BATCH} x {LENGTH} tokens")
    for k, t in best.items():
        print(f"{k:>20}: {t:7.2f} s  {tokens / t:8.0f} tokens/s")
    fwd = best["forward with logits"]
    print(f"perplexity / forward with logits: {best['perplexity'] / fwd:.3f}  (goal <= 1.15)")
    print(f"perplexity before issue 22 / forward with logits: {best['perplexity before'] / fwd:.3f}")
    print(f"continuation scores (LSS) / forward with logits: {best['continuations'] / fwd:.3f}")
    print(f"record / truncated forward: {best['record'] / best['truncated forward']:.3f}  (goal <= 1.05)")

    p32 = nl.perplexity(model, tok, corpus, batch_size=BATCH, max_length=LENGTH)
    half = model.to(torch.bfloat16)  # in place: the float32 weights are gone from here on
    p16 = nl.perplexity(half, tok, corpus, batch_size=BATCH, max_length=LENGTH)
    t16 = interleaved({"perplexity": ppl(half), "record": rec(half)}, rounds=2)
    print(
        f"bfloat16 / float32 time: perplexity {t16['perplexity'] / best['perplexity']:.3f}, "
        f"record {t16['record'] / best['record']:.3f}; perplexity {p32:.4f} (float32) vs {p16:.4f} (bfloat16): "
        f"{abs(p16 / p32 - 1):.2%} apart"
    )


if __name__ == "__main__":
    main()
