"""SLAM end to end on a stored toy model (tests/fixtures/toys/slam, `python -m neuronlab.demo.toys`): it adds
number words in English only; FFN-only fine-tuning of the layers SLAM selects, on questions in four languages, teaches
French, German and Spanish (issue 10), and fine-tuning the top two layers does not.

The base model is trained once and stored (6 layers, d64, ReLU FFN, 1500 steps on FLORES lines 0-799 of en/fr/de/es
and the English questions; torch 2.14.1, tokenizers 0.23.3), so a library release moves these figures only through
the fine-tune under test. Measured on it (2026-12-07), on the 30 held-out number pairs: base accuracy en 0.69,
fr/de/es 0.00. SLAM picks layers [0, 2]; training their up and down projections (16.6% of the values) for 150 steps
gives fr/de/es 0.20-0.33 (seed 0) and 0.30-0.40 (seed 1), mean 0.31, English 0.74-0.75; the top layers [4, 5] give
0.07-0.17, mean 0.12, English 0.77-0.78. The fine-tune trains, so both seeds are averaged and the test allows: the
other languages up by >= 0.2 (measured +0.31), English down by <= 0.1 per seed (measured +0.05), SLAM's layers ahead
of the top layers by > 0.1 (measured 0.18).

Before the base was stored (trained in the test), torch 2.13 gave a stronger base (en 0.85) and SLAM 0.39 vs 0.05.
"""

import pytest

import neuronlab as nl
from neuronlab.demo.slam import accuracy, experiment, finetune_layers

from ..conftest import FLORES, TOYS, needs_shared

pytestmark = [pytest.mark.slow, pytest.mark.toy, needs_shared(FLORES)]
OTHERS = ("fr", "de", "es")


def _mean(acc: dict) -> float:
    return sum(acc[lang] for lang in OTHERS) / len(OTHERS)


def test_slam_layers_learn_the_other_languages_and_keep_english():
    import torch

    from neuronlab.data.corpora import read_text_dir

    torch.set_num_threads(2)
    setup = experiment(*nl.load_model(TOYS / "slam"), read_text_dir(FLORES, "*.devtest"))  # the stored base
    base = accuracy(setup.model, setup.tok, setup.held_out)
    assert base["en"] >= 0.6 and _mean(base) <= 0.1, base  # learned in English only

    stats = nl.record(setup.model, setup.tok, setup.text, site="act", progress=False)
    chosen = nl.select_layers(stats, k=2)
    # both seeds of the docstring, averaged: one seed's margin over the top layers is 0.12 or 0.24
    # (the full fine-tune of the docstring is not rerun here: 15 s a seed)
    slam = [finetune_layers(setup, chosen.layers, seed=seed) for seed in (0, 1)]
    upper = [finetune_layers(setup, [4, 5], seed=seed) for seed in (0, 1)]
    print("base", base, "\nslam", chosen.layers, slam, "\nupper", upper)
    others = lambda runs: sum(_mean(r["accuracy"]) for r in runs) / len(runs)  # noqa: E731
    assert others(slam) >= _mean(base) + 0.2  # measured +0.31
    assert all(r["accuracy"]["en"] >= base["en"] - 0.1 for r in slam)  # measured +0.05 and +0.06
    assert slam[0]["share"] < 0.2
    assert others(slam) > others(upper) + 0.1  # measured 0.31 vs 0.12
