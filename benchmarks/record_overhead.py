"""Throughput of `record` against a bare forward pass in the same process (issue 2; target >= 0.95).

GPT-2 architecture, 6 layers, d_model 512, vocab 8192, random weights, batches of 8 x 256 tokens.
The bare forward is the model's own `model(input_ids, attention_mask)` on the same, already tokenized
batches; `record` includes tokenizing, padding, the statistics and moving them to the CPU.
Prints tokens per second of each, then the ratio (record / bare) on the last line.
"""

from __future__ import annotations

import torch
from _common import BATCH, LENGTH, char_tokenizer, gpt2_model, interleaved, texts

import neuronlab as nl

N_BATCHES = 6


def main() -> None:
    torch.set_num_threads(2)
    model, tok = gpt2_model(), char_tokenizer()
    corpus = texts(BATCH * N_BATCHES)
    ids = torch.tensor(tok(corpus)["input_ids"])
    assert ids.shape == (BATCH * N_BATCHES, LENGTH)
    batches = ids.split(BATCH)
    mask = torch.ones(BATCH, LENGTH, dtype=torch.long)

    def bare():
        with torch.no_grad():
            for b in batches:
                model(input_ids=b, attention_mask=mask, use_cache=False)

    def recorded():
        nl.record(model, tok, {"x": corpus}, site="act", batch_size=BATCH, max_length=LENGTH, progress=False,
                  count_special=True)  # fmt: skip

    best = interleaved({"bare": bare, "record": recorded})
    tokens = BATCH * N_BATCHES * LENGTH
    for k, t in best.items():
        print(f"{k:>8}: {tokens / t:10.0f} tokens/s")
    print(f"record / bare forward throughput: {best['bare'] / best['record']:.3f}")


if __name__ == "__main__":
    main()
