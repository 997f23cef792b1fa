"""Expert alignment across training checkpoints, end to end from the CLI, on a model trained in the test."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from scipy.stats import spearmanr

from neuronlab.select.experts import Expertise
from tests.conftest import SHARED, needs_shared

SIMLEX = SHARED / "data" / "word_similarity" / "EN-SIMLEX-999.txt"
DOMAINS = {  # 23 SimLex-999 words, 18 rated pairs among them
    "animal": ["cat", "dog", "horse", "lion", "mouse", "rabbit"],
    "vehicle": ["boat", "bus", "cab", "car", "taxi", "vehicle"],
    "food": ["apple", "bread", "cheese", "juice", "meat", "milk"],
    "house": ["door", "floor", "kitchen", "roof", "window"],
}
FRAMES = {
    "animal": ("the {} ran after the {}", "a {} slept near a {}", "my {} is a friend of the {}"),
    "vehicle": ("we drove the {} behind the {}", "the {} stopped next to a {}", "he rode a {} and a {}"),
    "food": ("she ate the {} with some {}", "we bought {} and {} to eat", "the {} tasted like {}"),
    "house": ("the {} was above the {}", "they painted the {} and the {}", "a {} opens to the {}"),
}
STEPS = (0, 60, 240)


def corpus(n: int = 1500, seed: int = 0) -> list[str]:
    """Sentences that pair words of one domain: the co-occurrence a model can learn similarity from."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        d = rng.choice(list(DOMAINS))
        lines.append(rng.choice(FRAMES[d]).format(*rng.sample(DOMAINS[d], 2)) + ".")
    return lines


@pytest.mark.slow
@needs_shared(SIMLEX)
def test_alignment_at_each_checkpoint_of_a_model_trained_here(tmp_path):
    """A 2-layer GPT-2-architecture model (d 32, FFN 128) trained on 1,500 sentences that pair words of one
    domain (loss 5.58 -> 2.79 at step 60 -> 1.60 at step 240), saved at steps 0, 60 and 240; concepts are the
    23 words in the 8 offline templates. Measured, Spearman of expert Jaccard (tau 0.5 of the way from chance AP
    to 1) against SimLex-999 over the 18 covered pairs: +0.45 / -0.14 / +0.15 (+0.32 / +0.09 / -0.04 with the old
    absolute AP >= 0.5), AP cosine +0.29 / +0.24 / +0.27. No trend: the random model
    scores as high as the trained ones, 18 pairs give little power (a rho of 0.3 is within noise), and SimLex
    rates similarity (cab-taxi), not the co-occurrence this corpus teaches. Only the plumbing and the
    arithmetic are asserted: each checkpoint's Spearman equals SciPy on Jaccard computed by hand."""
    from typer.testing import CliRunner

    from neuronlab.analyze.alignment import read_ratings
    from neuronlab.cli import app
    from neuronlab.data.concepts import template_concepts, write_concepts
    from neuronlab.demo.train import tiny_gpt2, train, train_tokenizer

    words = [w for ws in DOMAINS.values() for w in ws]
    concepts = template_concepts(words)
    write_concepts(tmp_path / "concepts.jsonl", concepts)
    lines = corpus()
    tok = train_tokenizer(lines + [s for c in concepts.values() for s in c["positive"]], 256)
    model = tiny_gpt2(tok, hidden=32, layers=2, d_ff=128)
    done = 0
    for step in STEPS:
        if step > done:
            train(
                model,
                tok,
                {"en": lines},
                steps=step - done,
                batch_size=16,
                seq_len=32,
                lr=3e-3,
                seed=step,
                progress=False,
            )
            done = step
        model.save_pretrained(tmp_path / f"step{step}")
        tok.save_pretrained(tmp_path / f"step{step}")
    runner = CliRunner()
    ratings = read_ratings(SIMLEX)
    runs = []
    for step in STEPS:
        ex_dir, al_dir = tmp_path / f"ex{step}", tmp_path / f"al{step}"
        result = runner.invoke(
            app,
            [
                "experts",
                "find",
                "-m",
                str(tmp_path / f"step{step}"),
                "--concepts",
                str(tmp_path / "concepts.jsonl"),
                "--out",
                str(ex_dir),
            ],
        )
        assert result.exit_code == 0, result.output
        result = runner.invoke(
            app, ["experts", "align", "--experts", str(ex_dir), "--human", str(SIMLEX), "--out", str(al_dir)]
        )
        assert result.exit_code == 0, result.output
        got = json.loads((al_dir / "alignment.json").read_text())
        ex = Expertise.load(ex_dir / "expertise.safetensors")
        ap = ex["ap"].numpy()  # [concepts, layers, neurons]
        chance = {c: len(s["positive"]) / (len(s["positive"]) + len(s["negative"])) for c, s in concepts.items()}
        need = {c: chance[c] + 0.5 * (1 - chance[c]) for c in ex.concepts}  # tau 0.5 of the way from chance to 1
        sets = {c: set(zip(*np.nonzero(ap[i] >= need[c]), strict=True)) for i, c in enumerate(ex.concepts)}
        jac = lambda a, b: len(sets[a] & sets[b]) / len(sets[a] | sets[b]) if sets[a] | sets[b] else 0.0  # noqa: E731
        pairs = [(a, b, s) for a, b, s in ratings if a in sets and b in sets and a != b]
        want = spearmanr([jac(a, b) for a, b, _ in pairs], [s for *_, s in pairs]).statistic
        assert got["pairs"] == len(pairs) == 18
        assert got["spearman"] == pytest.approx(float(want), abs=1e-9, nan_ok=True)
        print(f"step {step}: spearman {got['spearman']:+.3f} ap_cosine {got['ap_cosine']:+.3f}")
        runs += ["--run", f"{step}={al_dir}"]
    result = runner.invoke(
        app, ["experts", "trend", *runs, "--out", str(tmp_path / "trend.json"), "--plot", str(tmp_path / "trend.png")]
    )
    assert result.exit_code == 0, result.output
    trend = json.loads((tmp_path / "trend.json").read_text())
    assert trend["checkpoints"] == [str(s) for s in STEPS] and len(trend["spearman"]) == len(STEPS)
    assert (tmp_path / "trend.png").read_bytes()[:4] == b"\x89PNG"
