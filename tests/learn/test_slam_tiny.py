"""SLAM end to end on a model trained here: it adds number words in English only; FFN-only fine-tuning of the
layers SLAM selects, on questions in four languages, teaches French, German and Spanish (issue 10).

Measured (seeds 0 and 1 of the fine-tune; base model 6 layers, d64, ReLU FFN, 1500 steps on FLORES lines 0-799 of
en/fr/de/es and the English questions): base accuracy en 0.85, fr/de/es 0.00 on the 30 held-out number pairs.
SLAM picks layers [0, 2] (MSD 164 and 7; the others 1-4.5); training their up and down projections (16.6% of the
values) for 150 steps gives fr/de/es 0.30-0.43, English 0.80-0.84. The top two layers [4, 5] give 0.00-0.07, random
pairs of layers 0.07-0.23; a full fine-tune with the same steps gives 0.27-0.57 (slightly more than SLAM on average)
and forgets more English (0.77-0.78).

With torch 2.14.1 and tokenizers 0.23.3 (2026-12-07) the same code trains a weaker base (en 0.69) and the top layers
learn more: SLAM still picks [0, 2] and gives fr/de/es 0.20-0.40 (mean 0.31 over both seeds), English 0.74-0.75;
the top layers [4, 5] give 0.07-0.17 (mean 0.12).
"""

import pytest

import neuronlab as nl
from neuronlab.demo.slam import accuracy, build, finetune_layers

from ..conftest import FLORES, needs_shared

pytestmark = [pytest.mark.slow, needs_shared(FLORES)]
OTHERS = ("fr", "de", "es")


def _mean(acc: dict) -> float:
    return sum(acc[lang] for lang in OTHERS) / len(OTHERS)


def test_slam_layers_learn_the_other_languages_and_keep_english():
    import torch

    from neuronlab.data.corpora import read_text_dir

    torch.set_num_threads(2)
    setup = build(read_text_dir(FLORES, "*.devtest"))
    base = accuracy(setup.model, setup.tok, setup.held_out)
    assert base["en"] >= 0.6 and _mean(base) <= 0.1, base  # learned in English only

    stats = nl.record(setup.model, setup.tok, setup.text, site="act", progress=False)
    chosen = nl.select_layers(stats, k=2)
    # both seeds of the docstring, averaged: one seed's margin over the top layers is 0.12 or 0.24 (2026-12-07)
    # (the full fine-tune of the docstring is not rerun here: 15 s a seed)
    slam = [finetune_layers(setup, chosen.layers, seed=seed) for seed in (0, 1)]
    upper = [finetune_layers(setup, [4, 5], seed=seed) for seed in (0, 1)]
    print("base", base, "\nslam", chosen.layers, slam, "\nupper", upper)
    others = lambda runs: sum(_mean(r["accuracy"]) for r in runs) / len(runs)  # noqa: E731
    assert others(slam) >= _mean(base) + 0.2  # measured +0.39, now +0.31
    assert all(r["accuracy"]["en"] >= base["en"] - 0.1 for r in slam)  # measured -0.05, now +0.05
    assert slam[0]["share"] < 0.2
    assert others(slam) > others(upper) + 0.1  # measured 0.39 vs 0.05, now 0.31 vs 0.12
