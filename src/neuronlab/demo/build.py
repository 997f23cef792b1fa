"""Rebuild the embedded demo model and its data from scratch (about 20 minutes on 2 CPU cores).

    pip install faker && python -m neuronlab.demo.build

Generates 2400 lines per language with Faker (corpus.py), trains a byte-level BPE tokenizer and a
4-layer Llama (d_model 128, 384 FFN neurons a layer, 1.1M parameters) on lines 0-1999 of each language,
and writes the model to `demo/model/` and lines 2000-2399 (never seen in training) to `demo/data/`,
which the demo uses for recording and evaluation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from neuronlab.demo.corpus import LOCALES, generate
from neuronlab.demo.train import tiny_llama, train, train_tokenizer

HERE = Path(__file__).parent
TRAIN_LINES, TOTAL_LINES = 2000, 2400


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    torch.set_num_threads(2)
    corpus = {lang: generate(lang, TOTAL_LINES) for lang in LOCALES}
    train_texts = {lang: lines[:TRAIN_LINES] for lang, lines in corpus.items()}
    tok = train_tokenizer([line for lines in train_texts.values() for line in lines], vocab_size=2048)
    model = tiny_llama(tok, hidden=128, layers=4, d_ff=384, heads=4)
    losses = train(model, tok, train_texts, steps=args.steps, batch_size=32, seq_len=128, lr=3e-3)
    (args.out / "model").mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out / "model")
    tok.save_pretrained(args.out / "model")
    config = args.out / "model" / "tokenizer_config.json"  # a class name transformers 4.x knows too (same tokenizer)
    config.write_text(config.read_text().replace('"TokenizersBackend"', '"PreTrainedTokenizerFast"'))
    (args.out / "model" / "training.json").write_text(
        json.dumps(
            {
                "steps": args.steps,
                "final_loss": sum(losses[-50:]) / 50,
                "languages": list(LOCALES),
                "train_lines": TRAIN_LINES,
                "corpus": "neuronlab.demo.corpus (Faker, seed 0)",
            },
            indent=1,
        )
        + "\n"
    )
    (args.out / "data").mkdir(parents=True, exist_ok=True)
    for lang, lines in corpus.items():
        (args.out / "data" / f"{lang}.txt").write_text("\n".join(lines[TRAIN_LINES:]) + "\n", encoding="utf-8")
    print(f"final loss {sum(losses[-50:]) / 50:.3f}; wrote {args.out / 'model'} and {args.out / 'data'}")


if __name__ == "__main__":
    main()
