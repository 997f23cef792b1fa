"""A tiny SLAM experiment: a model that adds number words in English but not in other languages, then FFN-only
fine-tuning of chosen layers on questions in the other languages (tests/learn; `python -m neuronlab.demo.slam [MODEL]`
runs it with three seeds on the stored base, tests/fixtures/toys/slam, which `neuronlab.demo.toys` trains).

    setup = experiment(*nl.load_model("tests/fixtures/toys/slam"), flores)  # the stored base model
    base = accuracy(setup.model, setup.tok, setup.held_out)  # {"en": ..., "fr": ..., ...}
    run = finetune_layers(setup, layers=[0, 1], seed=0)      # {"accuracy": ..., "trainable": ..., "share": ...}

Questions are "What is three plus four?" with number words 0-9 in each language; the answer is the sum in digits.
The base model reads general text of every language (FLORES lines) and the English questions only. Fine-tuning
sees questions in every language (English too, as multilingual question-alignment data does) for 70 of the 100
number pairs; accuracy is measured on the other 30 pairs (and, for English, on all 100 pairs, to see what the
fine-tune forgets).
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass

WORDS = {
    "en": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
    "fr": ["zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf"],
    "de": ["null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"],
    "es": ["cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"],
}
QUESTIONS = {
    "en": "What is {a} plus {b}?",
    "fr": "Combien font {a} plus {b} ?",
    "de": "Was ist {a} plus {b}?",
    "es": "¿Cuánto es {a} más {b}?",
}
FLORES_NAMES = {"en": "eng_Latn", "fr": "fra_Latn", "de": "deu_Latn", "es": "spa_Latn"}


def questions(lang: str, pairs) -> list[dict]:
    w = WORDS[lang]
    return [{"question": QUESTIONS[lang].format(a=w[a], b=w[b]), "answer": float(a + b)} for a, b in pairs]


def split_pairs(seed: int = 0, held_out: int = 30) -> tuple[list, list]:
    pairs = [(a, b) for a in range(10) for b in range(10)]
    random.Random(seed).shuffle(pairs)
    return pairs[held_out:], pairs[:held_out]


@dataclass
class Setup:
    model: object
    tok: object
    text: dict[str, list[str]]  # held-out general text per language (for the layer statistics)
    train: dict[str, list[dict]]  # fine-tuning questions per language (70 pairs)
    held_out: dict[str, list[dict]]  # evaluation questions: held-out pairs, English on every pair


def english_questions() -> tuple[list[str], list[str]]:
    """(every question with its answer in every language, the English ones): "What is three plus four? 7"."""
    every = [(a, b) for a in range(10) for b in range(10)]
    answered = {lang: [f"{q['question']} {int(q['answer'])}" for q in questions(lang, every)] for lang in WORDS}
    return [line for lines in answered.values() for line in lines], answered["en"]


def experiment(model, tok, flores: dict[str, list[str]], seed: int = 0) -> Setup:
    """The experiment around a base model (see module doc): held-out text, fine-tuning and evaluation questions."""
    fit, held = split_pairs(seed)
    every = [(a, b) for a in range(10) for b in range(10)]
    text = {lang: flores[FLORES_NAMES[lang]][800:] for lang in WORDS}
    others = [lang for lang in WORDS if lang != "en"]
    return Setup(
        model,
        tok,
        text,
        {lang: questions(lang, fit) for lang in WORDS},
        {"en": questions("en", every), **{lang: questions(lang, held) for lang in others}},
    )


def accuracy(model, tok, data: dict[str, list[dict]]) -> dict[str, float]:
    from neuronlab.evaluate.math import evaluate_math

    return evaluate_math(model, tok, data, "{query}", max_new_tokens=3, batch_size=32, progress=False)["accuracy"]


def finetune_layers(
    setup: Setup,
    layers: list[int],
    modules: str = "up,down",
    steps: int = 150,
    lr: float = 3e-3,
    seed: int = 0,
    out=None,
) -> dict:
    """Fine-tune a copy of the base model (the chosen layers' FFN, or modules="all") on the non-English questions
    for `steps` optimizer steps; its accuracy on the held-out questions, trainable values and share."""
    import tempfile

    from neuronlab.learn.finetune import FinetuneConfig, finetune

    model = copy.deepcopy(setup.model)
    items = [{"prompt": q["question"], "response": str(int(q["answer"]))} for qs in setup.train.values() for q in qs]
    cfg = FinetuneConfig(
        modules=modules, lr=lr, max_steps=steps, batch_size=16, template="{query}", seed=seed, save_steps=10**9
    )
    with tempfile.TemporaryDirectory() as tmp:
        delta = finetune(model, setup.tok, items, layers, cfg, out=out or tmp, resume=False, progress=False)
    return {
        "accuracy": accuracy(model, setup.tok, setup.held_out),
        "trainable": delta.meta["trainable"],
        "share": delta.meta["share"],
        "layers": list(layers),
        "modules": modules,
        "seed": seed,
    }


def main() -> None:  # pragma: no cover - the experiment as a script
    import json
    import sys

    from neuronlab.data.corpora import read_text_dir
    from neuronlab.models.load import load_model
    from neuronlab.record.recorder import record
    from neuronlab.select.layers import select_layers

    # the stored base model (`python -m neuronlab.demo.toys slam` trains it again, minutes)
    model = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/toys/slam"
    run = experiment(*load_model(model), read_text_dir("../shared/data/flores200_devtest", "*.devtest"))
    base = accuracy(run.model, run.tok, run.held_out)
    stats = record(run.model, run.tok, run.text, site="act", progress=False)
    chosen = select_layers(stats, k=2).layers
    runs = {"base": base}
    for seed in (0, 1, 2):
        runs[f"slam {chosen} s{seed}"] = finetune_layers(run, chosen, seed=seed)
        lowest = select_layers(stats, k=2, method="random", seed=seed).layers
        runs[f"random {lowest} s{seed}"] = finetune_layers(run, lowest, seed=seed)
        runs[f"full s{seed}"] = finetune_layers(run, [], modules="all", seed=seed)
    print(json.dumps(runs, indent=1))


if __name__ == "__main__":  # pragma: no cover
    main()
