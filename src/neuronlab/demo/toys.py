"""The toy models that method tests load instead of training them each run (tests/fixtures/toys/).

    python -m neuronlab.demo.toys --flores ../shared/data/flores200_devtest --out tests/fixtures/toys
    model, tok, losses = train_toy("slam", flores)     # the recipe alone (tests run it for a few steps)

Each toy is trained once, seeded, and stored as a Hugging Face folder (float32 safetensors, its tokenizer) with
`training.json` beside it: the recipe, the final loss and the torch, transformers and tokenizers versions that
trained it. A library release can then move a test's result only through the method under test, never through
how a toy happens to train on today's libraries. Retrain only on purpose, and re-measure the tests' figures.

- `slam`: 6-layer GPT-2 (d64, ReLU FFN of 256), FLORES lines 0-799 of en/fr/de/es and the English number questions
  of `neuronlab.demo.slam` (1500 steps); tests/learn/test_slam_tiny.py.
- `flores7`: 4-layer GPT-2 (d64, ReLU FFN of 512), FLORES lines 0-799 of every other language of the 14 (7 languages,
  700 steps); tests/demo/test_demo.py.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Recipe:
    """How one toy is trained (every number that decides its weights, besides the data and the libraries)."""

    languages: tuple[str, ...]  # FLORES file names (eng_Latn, ...)
    vocab_size: int
    hidden: int
    layers: int
    d_ff: int
    steps: int
    seq_len: int
    lr: float
    batch_size: int = 16
    heads: int = 4
    train_lines: int = 800
    seed: int = 0


def _flores7(flores: dict[str, list[str]]) -> tuple[str, ...]:
    return tuple(sorted(flores)[::2])  # every other language of the 14: arb, eng, hin, ita, kor, rus, vie


TOYS: dict[str, Callable[[dict[str, list[str]]], Recipe]] = {
    "slam": lambda flores: Recipe(
        ("eng_Latn", "fra_Latn", "deu_Latn", "spa_Latn"), 1024, 64, 6, 256, steps=1500, seq_len=64, lr=3e-3
    ),
    "flores7": lambda flores: Recipe(_flores7(flores), 2048, 64, 4, 512, steps=700, seq_len=128, lr=4e-3),
}


def train_toy(name: str, flores: dict[str, list[str]], steps: int | None = None, progress: bool = False):
    """(model, tokenizer, losses, recipe) of toy `name` trained from scratch on `flores` (FLORES name -> lines);
    `steps` overrides the recipe's (the fast test of this recipe)."""
    from neuronlab.demo.slam import english_questions
    from neuronlab.demo.train import tiny_gpt2, train, train_tokenizer

    recipe = TOYS[name](flores)
    if steps is not None:
        recipe = Recipe(**{**asdict(recipe), "steps": steps})
    corpus = {lang: flores[lang][: recipe.train_lines] for lang in recipe.languages}
    lines = [line for ls in corpus.values() for line in ls]
    if name == "slam":  # the number questions: in the tokenizer in every language, in training in English only
        every_language, english = english_questions()
        lines += every_language
        corpus["questions"] = english * 8  # one stream among five: the model sees the English questions often
    tok = train_tokenizer(lines, recipe.vocab_size)
    model = tiny_gpt2(tok, hidden=recipe.hidden, layers=recipe.layers, d_ff=recipe.d_ff, heads=recipe.heads)
    losses = train(
        model,
        tok,
        corpus,
        steps=recipe.steps,
        batch_size=recipe.batch_size,
        seq_len=recipe.seq_len,
        lr=recipe.lr,
        seed=recipe.seed,
        progress=progress,
    )
    return model, tok, losses, recipe


def save_toy(model, tok, losses: list[float], recipe: Recipe, out: Path, seconds: float = 0.0) -> None:
    """The model folder and its `training.json` (recipe, final loss, library versions)."""
    import tokenizers
    import torch
    import transformers

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    config = out / "tokenizer_config.json"  # a class name transformers 4.x knows too (the same tokenizer)
    config.write_text(config.read_text().replace('"TokenizersBackend"', '"PreTrainedTokenizerFast"'))
    record = {
        "recipe": asdict(recipe),
        "final_loss": sum(losses[-50:]) / len(losses[-50:]),
        "seconds": round(seconds, 1),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "python": platform.python_version(),
        },
        "data": "FLORES-200 devtest (../shared/data/flores200_devtest)",
    }
    (out / "training.json").write_text(json.dumps(record, indent=1) + "\n")


def main() -> None:  # pragma: no cover - the training run itself (minutes); tests run the recipes for a few steps
    import torch

    from neuronlab.data.corpora import read_text_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flores", type=Path, default=Path("../shared/data/flores200_devtest"))
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/toys"))
    parser.add_argument("names", nargs="*", default=sorted(TOYS), help=f"toys to train (default all: {sorted(TOYS)})")
    args = parser.parse_args()
    torch.set_num_threads(2)
    flores = read_text_dir(args.flores, "*.devtest")
    for name in args.names:
        start = time.perf_counter()
        model, tok, losses, recipe = train_toy(name, flores, progress=True)
        save_toy(model, tok, losses, recipe, args.out / name, time.perf_counter() - start)
        seconds = time.perf_counter() - start
        print(f"{name}: final loss {sum(losses[-50:]) / 50:.3f}, {seconds:.0f} s -> {args.out / name}")


if __name__ == "__main__":
    main()
