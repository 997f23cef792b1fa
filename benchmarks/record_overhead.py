"""Throughput of `record` against a bare forward pass in the same process (issue 2; target >= 0.95), and against
the floor: the same forward truncated after the last layer (`model.base_model`, no unembedding; issue 12's GPU
target: record <= 1.05x its time). `--device cuda` measures a GPU.

GPT-2 architecture, 6 layers, d_model 512, vocab 8192, random weights, batches of 8 x 256 tokens.
The bare forward is the model's own `model(input_ids, attention_mask)` on the same, already tokenized
batches; `record` includes tokenizing, padding, the statistics and moving them to the CPU.
Prints tokens per second of each, then the ratio (record / bare) on the last line. Also times `record` keeping
each neuron's top 20 contexts (`contexts=True`, for `neuronlab view`) against plain `record`.
"""

from __future__ import annotations

import torch
from _common import BATCH, LENGTH, bench_device, char_tokenizer, gpt2_model, interleaved, texts

import neuronlab as nl

N_BATCHES = 6


def main() -> None:
    device = bench_device()
    model, tok = gpt2_model().to(device), char_tokenizer()
    corpus = texts(BATCH * N_BATCHES)
    ids = torch.tensor(tok(corpus)["input_ids"])
    assert ids.shape == (BATCH * N_BATCHES, LENGTH)
    batches = ids.split(BATCH)
    mask = torch.ones(BATCH, LENGTH, dtype=torch.long)

    def forward(m):
        def run():
            with torch.no_grad():
                for b in batches:
                    m(input_ids=b.to(device), attention_mask=mask.to(device), use_cache=False)

        return run

    def recorded(contexts=False):
        return lambda: nl.record(
            model,
            tok,
            {"x": corpus},
            site="act",
            batch_size=BATCH,
            max_length=LENGTH,
            progress=False,
            count_special=True,
            contexts=contexts,
        )

    best = interleaved(
        {"bare": forward(model), "floor": forward(model.base_model), "record": recorded(), "contexts": recorded(True)}
    )
    tokens = BATCH * N_BATCHES * LENGTH
    for k, t in best.items():
        print(f"{k:>8}: {tokens / t:10.0f} tokens/s ({device})")
    print(f"record with top-20 contexts / record: {best['contexts'] / best['record']:.3f}")
    print(f"record time / floor (forward without the unembedding): {best['record'] / best['floor']:.3f}")
    print(f"record / bare forward throughput: {best['bare'] / best['record']:.3f}")


if __name__ == "__main__":
    main()
