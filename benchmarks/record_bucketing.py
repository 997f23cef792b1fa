"""Tokens per second of `record` on real mixed-length text (FLORES-200), with and without length buckets, and of a
plain Hugging Face loop over the same texts, all in one process (issue 12).

GPT-2 architecture, 6 layers, d_model 512, random weights, with the demo model's multilingual tokenizer (2,048
tokens); the first N sentences of each FLORES devtest language as groups, batches of 8, windows of 256.
- plain HF: `tokenizer(batch, padding=True)` then `model(**enc)` in corpus order: the loop people write;
  it records nothing and runs the unembedding.
- record, text order: `nl.record(..., bucket=1)` (all four statistics at every layer's `act`).
- record, buckets: `nl.record(...)` with its default length buckets.
Tokens per second count real tokens (not padding); the share of padded positions is printed too.

    python benchmarks/record_bucketing.py [--flores ../shared/data/flores200_devtest] [--sentences 16]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _common import BATCH, LENGTH, gpt2_model, interleaved
from transformers import AutoTokenizer

import neuronlab as nl
from neuronlab.data.batching import batches, windows
from neuronlab.data.corpora import read_text_dir
from neuronlab.demo.pipeline import DEMO_MODEL

FLORES = Path(__file__).resolve().parents[2] / "shared" / "data" / "flores200_devtest"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flores", type=Path, default=FLORES)
    parser.add_argument("--sentences", type=int, default=16, help="sentences per language")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(DEMO_MODEL)
    model = gpt2_model(vocab=len(tok)).to(args.device)
    corpus = read_text_dir(args.flores, pattern="*.devtest", limit=args.sentences)
    flat = [t for group in corpus.values() for t in group]
    tokens = sum(len(ids) - 1 for ids in tok(flat)["input_ids"])  # BOS is not counted by record

    def plain():
        with torch.no_grad():
            for start in range(0, len(flat), BATCH):
                enc = tok(
                    flat[start : start + BATCH], padding=True, truncation=True, max_length=LENGTH, return_tensors="pt"
                ).to(args.device)
                model(**enc, use_cache=False)

    def recorder(bucket):
        return lambda: nl.record(model, tok, corpus, batch_size=BATCH, max_length=LENGTH, bucket=bucket, progress=False)

    special = torch.tensor(tok.all_special_ids)
    for bucket in (1, 32):
        cells = real = 0
        for group in corpus.values():
            for b in batches(windows(tok, group, 0, LENGTH, False), BATCH, 0, special, False, bucket=bucket):
                cells, real = cells + b.input_ids.numel(), real + int(b.attention_mask.sum())
        print(f"bucket {bucket:>2}: {1 - real / cells:6.1%} of positions are padding")
    best = interleaved({"plain HF": plain, "record, text order": recorder(1), "record, buckets": recorder(32)})
    print(f"{len(corpus)} languages x {args.sentences} sentences, {tokens} tokens, device {args.device}")
    for k, t in best.items():
        print(f"{k:>20}: {tokens / t:10.0f} tokens/s")
    print(f"record buckets / record text order throughput: {best['record, text order'] / best['record, buckets']:.3f}")
    print(f"record buckets / plain HF loop throughput: {best['plain HF'] / best['record, buckets']:.3f}")


if __name__ == "__main__":
    main()
