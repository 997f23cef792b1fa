"""The expert study as one call on stories260K, with 14 words TinyStories knows (12 SimLex-999 pairs) and
story-opening prompts the model writes their sentences from: results.json holds the figures the claims are computed
from; the headline Spearman is recomputed with SciPy from the saved experts (Jaccard of experts.json) and the
SimLex-999 file, the steering share and its interval from steering.json with SciPy's Wilson interval."""

import json

import pytest
import torch

import neuronlab as nl
from neuronlab.analyze.alignment import jaccard, read_ratings
from neuronlab.data.concepts import STORY_PROMPTS

from ..conftest import SHARED, STORIES, needs_shared

DATA = SHARED / "data"
WORDS = ("woman", "man", "father", "child", "boy", "brother", "girl", "dog", "cat", "lion", "rabbit", "horse")
WORDS += ("water", "ice")  # rated_words' choice among the TinyStories words of tests/select/test_experts.py
SMALL = dict(data=str(DATA), word_list=WORDS, prompts=STORY_PROMPTS, per_concept=3, k=10, resamples=200)
pytestmark = [pytest.mark.slow, needs_shared(STORIES), needs_shared(DATA / "word_similarity")]


def _verdict(value, low, high, bar):
    return "holds" if low > bar else "does not hold" if high <= bar else "inconclusive"


def test_the_study_aligns_the_saved_experts_with_people_and_its_claims_are_the_figures_arithmetic(tmp_path):
    from scipy.stats import binomtest, spearmanr

    torch.set_num_threads(2)
    out = tmp_path / "experts"
    results = nl.study("experts", [STORIES], out, size="smoke", log=lambda *_: None, **SMALL)
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["config"] == "ExpertsStudyConfig" and saved["config"]["word_list"] == list(WORDS)
    assert len(saved["claims"]) == len(results["claims"]) == 3
    run, folder = saved["models"]["stories260K"], out / "stories260K"
    assert {"write sentences", "find experts", "alignment", "concept steering"} <= set(run["seconds"])
    for name in ("concepts.jsonl", "expertise.safetensors", "baselines.safetensors", "experts.json", "steering.json"):
        assert (folder / name).is_file(), name
    f = run["figures"]
    assert f["concepts"] == 14 and set(f["skipped"]) == {"WordSim-353", "RG-65"}  # fewer than 3 pairs there
    simlex = f["alignment"]["SimLex-999"]
    table = simlex["table"]

    # the rated pairs and scores from the file itself, the Jaccard of the saved experts, Spearman from SciPy
    rated = {(a, b): s for a, b, s in read_ratings(DATA / "word_similarity" / "EN-SIMLEX-999.txt")}
    assert [tuple(p) for p in table["pairs"]] == [p for p in rated if p[0] in WORDS and p[1] in WORDS and p[0] != p[1]]
    assert simlex["pairs"] == 12 and table["human"] == [rated[tuple(p)] for p in table["pairs"]]
    ns = nl.NeuronSet.load(folder / "experts.json")
    assert table["jaccard"] == pytest.approx([jaccard(ns.pairs(a), ns.pairs(b)) for a, b in table["pairs"]])
    rho = {
        k: spearmanr(table[k], table["human"]).statistic for k in ("jaccard", "input_embedding", "sentence_embedding")
    }
    assert simlex["spearman"]["rho"] == pytest.approx(rho["jaccard"])
    assert simlex["input_embedding"]["rho"] == pytest.approx(rho["input_embedding"])
    low, high = simlex["spearman"]["interval"]
    assert -1 <= low <= rho["jaccard"] <= high <= 1

    aligned, better, forced = saved["claims"]
    assert aligned["values"]["stories260K"] == pytest.approx(rho["jaccard"])
    assert aligned["verdicts"]["stories260K"] == _verdict(rho["jaccard"], low, high, 0)
    gap = rho["jaccard"] - max(rho["input_embedding"], rho["sentence_embedding"])
    assert better["values"]["stories260K"] == pytest.approx(gap)
    assert better["verdicts"]["stories260K"] == _verdict(gap, *simlex["gap_interval"], 0)

    # forcing the experts: the share from steering.json's probabilities, the interval from SciPy
    steering = json.loads((folder / "steering.json").read_text())
    up = sum(r["force_all"] > r["plain"] for r in steering["concepts"].values())
    assert steering["k"] == 10 and forced["values"]["stories260K"] == pytest.approx(up / 14)
    assert forced["values"]["stories260K"] == pytest.approx(steering["modes"]["force_all"]["raised"])
    ci = binomtest(up, 14).proportion_ci(method="wilson")
    assert forced["intervals"]["stories260K"] == pytest.approx([ci.low, ci.high], abs=1e-6)
    assert forced["verdicts"]["stories260K"] == _verdict(up / 14, ci.low, ci.high, 0.5)
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 3
    # a second run with the same seeds writes the same sentences and gives the same figures
    again = nl.study("experts", [STORIES], tmp_path / "again", size="smoke", log=lambda *_: None, **SMALL)
    assert json.loads(json.dumps(again["models"]["stories260K"]["figures"]), parse_constant=str) == json.loads(
        json.dumps(f), parse_constant=str
    )


def test_the_command_checks_the_settings_before_it_loads_a_model(tmp_path):
    from typer.testing import CliRunner

    from neuronlab.cli import app

    args = ["study", "experts", "-m", str(tmp_path / "no-model"), "--out", str(tmp_path / "ex"), "--size", "smoke"]
    bad = CliRunner().invoke(app, [*args, "--set", "per_concept=0"])
    assert bad.exit_code == 2 and "per_concept and k at least 1" in bad.output
    bad = CliRunner().invoke(app, [*args, "--set", "tau=2"])
    assert bad.exit_code == 2 and "tau must lie in [0, 1]" in bad.output
    assert not (tmp_path / "ex" / "results.json").exists()
