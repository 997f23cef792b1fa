"""The vector-arithmetic study as one call and one command, on two models side by side (stories260K and a tiny
random GPT-2): results.json holds what the claims are computed from, the numbers are checked against the model's
own logits, a second run gives the same figures, and a killed run resumes from the models it finished."""

import json
import random

import pytest
import torch

import neuronlab as nl
from neuronlab.analyze.arithmetic import read_pairs, relation_items
from neuronlab.study.arithmetic import RELATIONS

from ..conftest import SHARED, STORIES, needs_shared

RELATION_DATA = SHARED / "data" / "relations"
pytestmark = [pytest.mark.slow, needs_shared(STORIES), needs_shared(RELATION_DATA)]
SMOKE = dict(size="smoke", data=str(RELATION_DATA), log=lambda *_: None)


def _accuracy_by_hand(model, tok, pairs: int, seed: int = 0) -> float:
    """Held-out accuracy of the capital relation from the model's own logits: the first token of the answer is the
    top token after the prompt (the study's split and prompts, recomputed)."""
    file, template = RELATIONS["capital"]
    found = list(dict.fromkeys(read_pairs(RELATION_DATA / file)))
    random.Random(seed).shuffle(found)
    items = relation_items(found[: 2 * pairs], template, shots=2, seed=seed)[pairs:]
    right = 0
    for item in items:
        prompt = tok(item["prompt"])["input_ids"]
        full = tok(item["prompt"] + item["target"])["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt])).logits[0, -1]
        right += int(logits.argmax()) == full[len(prompt)]
    return right / len(items)


def test_the_study_on_two_models_matches_the_models_own_logits_and_repeats(model_dir, tmp_path):
    out = tmp_path / "arith"
    results = nl.study("arithmetic", [STORIES, model_dir], out, **SMOKE)
    assert set(results["models"]) == {"stories260K", model_dir.name}
    saved = json.loads((out / "results.json").read_text())
    assert saved["claims"] == results["claims"] and saved["config"]["pairs"] == 8 and saved["size"] == "smoke"
    assert {"torch", "transformers", "neuronlab"} <= set(saved["versions"])
    for label, path in (("stories260K", STORIES), (model_dir.name, model_dir)):
        run = saved["models"][label]
        assert run["model"]["n_layers"] == run["figures"]["relations"]["capital"]["lens"]["layers"]
        assert run["seconds"]["load"] > 0 and set(run["seconds"]) >= {"accuracy and logit lens", "ablation"}
        model, tok = nl.load_model(path)
        capital = run["figures"]["relations"]["capital"]
        assert capital["accuracy"] == pytest.approx(_accuracy_by_hand(model, tok, 8))
        assert len(capital["patching"]["by_layer"]) == len(capital["ablation"]) == run["model"]["n_layers"]
    # the claims are the figures' arithmetic, for every model
    task = next(c for c in results["claims"] if c["claim"].startswith("The model does the task"))
    for label, run in saved["models"].items():
        assert task["values"][label] == run["figures"]["relations"]["capital"]["accuracy"]
        assert task["verdicts"][label] == ("holds" if task["values"][label] > 0.3 else "does not hold")
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "Verdicts" in page and "stories260K" in page
    # a second run gives the same figures (seconds aside); a finished model is not run again
    again = nl.study("arithmetic", [STORIES], tmp_path / "again", **SMOKE)
    assert again["models"]["stories260K"]["figures"] == saved["models"]["stories260K"]["figures"]
    said = []
    nl.study("arithmetic", [STORIES, model_dir], out, **{**SMOKE, "log": said.append})
    assert said[0].startswith("arithmetic: stories260K done in an earlier run") and len(said) == 2


def test_the_command_runs_a_study_with_a_changed_setting(tmp_path):
    from typer.testing import CliRunner

    from neuronlab.cli import app

    out = tmp_path / "arith"
    args = ["study", "arithmetic", "-m", str(STORIES), "--out", str(out), "--size", "smoke"]
    result = CliRunner().invoke(app, [*args, "--set", "pairs=6", "--set", f"data={RELATION_DATA}"])
    assert result.exit_code == 0, result.output
    assert "- The model does the task" in result.output and "stories260K: " in result.output
    assert json.loads((out / "results.json").read_text())["config"]["pairs"] == 6
    bad = CliRunner().invoke(app, [*args, "--set", "pears=6"])
    assert bad.exit_code == 2 and "--set 'pears=6': write NAME=VALUE with a setting of" in bad.output
    bad = CliRunner().invoke(app, [*args, "--size", "huge"])
    assert bad.exit_code == 2 and "unknown size 'huge'" in bad.output
