"""The activation-scaling study as one call and one command, on two models side by side (stories260K, a real tiny
Llama, and a tiny random GPT-2 whose character tokenizer cannot tell " she" from " he"): results.json holds what
the claims are computed from, the model's own accuracy is checked against its plain logits, the claims are the
figures' arithmetic, and a task below chance is left out of the verdicts."""

import copy
import json

import pytest
import torch

import neuronlab as nl
from neuronlab.data.contrast import pronoun_task
from neuronlab.study.base import STUDIES

from ..conftest import STORIES, needs_shared

pytestmark = [pytest.mark.slow, needs_shared(STORIES)]
QUIET = dict(size="smoke", log=lambda *_: None)


def _own_accuracy(model, tok) -> tuple[float, float]:
    """(share of pronoun items with the target's first token above the foil's, mean logit difference) from the
    model's plain logits after each prompt."""
    right, diffs = 0, []
    for item in pronoun_task():
        prompt = tok(item["prompt"])["input_ids"]
        target, foil = (tok(item["prompt"] + item[k])["input_ids"][len(prompt)] for k in ("target", "foil"))
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt])).logits[0, -1]
        diffs.append(float(logits[target] - logits[foil]))
        right += diffs[-1] > 0
    return right / len(diffs), sum(diffs) / len(diffs)


def _verdicts_by_hand(tasks: dict) -> tuple[list, list]:
    """The first two claims' values and verdicts, from the figures, as the page's rules state them."""
    counted = [r for r in tasks.values() if r["model_accuracy"] is not None and r["model_accuracy"] >= 0.5]
    runs = [r["runs"] for r in counted]
    pairs = [(r["activscalar"]["held_out"]["flip_rate"], r["steervec"]["held_out"]["flip_rate"]) for r in runs]
    if not runs:
        return [None, None], ["inconclusive", "inconclusive"]
    gap = sum(a - s for a, s in pairs) / len(pairs)
    fewer = min(r["steervec"]["held_out"]["parameters"] / r["activscalar"]["held_out"]["parameters"] for r in runs)
    carry = sum(
        r["dynscalar"]["other_lengths"]["flip_rate"] - r["activscalar"]["other_lengths"]["flip_rate"] for r in runs
    ) / len(runs)
    first = "holds" if gap >= -0.1 and fewer >= 100 else "does not hold"
    second = "holds" if carry > 0.05 else "does not hold" if carry <= 0 else "inconclusive"
    return [gap, carry], [first, second]


def test_the_study_on_two_models_matches_the_models_own_logits(model_dir, tmp_path):
    out = tmp_path / "scaling"
    results = nl.study("scaling", [STORIES, model_dir], out, tasks=("pronoun",), epochs=2, **QUIET)
    saved = json.loads((out / "results.json").read_text())
    assert saved["claims"] == results["claims"] and saved["size"] == "smoke"
    assert saved["config"]["epochs"] == 2 and saved["config"]["tasks"] == ["pronoun"]
    run = saved["models"]["stories260K"]
    assert {"load", "model accuracy", "fit activscalar", "fit steervec", "fit dynscalar"} <= set(run["seconds"])
    pronoun = run["figures"]["tasks"]["pronoun"]
    model, tok = nl.load_model(STORIES)
    accuracy, logit_diff = _own_accuracy(model, tok)
    assert pronoun["model_accuracy"] == pytest.approx(accuracy) and pronoun["logit_diff"] == pytest.approx(logit_diff)
    assert pronoun["items"] == 60 and pronoun["held_out_groups"] == 15  # a quarter of the 60 names
    # one scalar per site, layer and position; the steering vector one d_model vector for each
    methods = pronoun["runs"]
    per_site = run["model"]["n_layers"] * 3  # attn_out, ffn_out, resid
    assert methods["activscalar"]["held_out"]["parameters"] % per_site == 0
    assert methods["steervec"]["held_out"]["parameters"] == methods["activscalar"]["held_out"]["parameters"] * 64
    assert "other_lengths" in methods["dynscalar"] and "other_lengths" not in methods["steervec"]
    assert (out / "stories260K" / "pronoun-activscalar" / "learned.safetensors").is_file()
    # the character tokenizer: no item to contrast, reported and left out
    tiny = saved["models"][model_dir.name]["figures"]["tasks"]["pronoun"]
    assert tiny["model_accuracy"] is None and tiny["items"] == 0 and tiny["dropped"] == 60
    for label, run in saved["models"].items():
        values, verdicts = _verdicts_by_hand(run["figures"]["tasks"])
        for claim, value, verdict in zip(results["claims"], values, verdicts, strict=False):
            assert claim["values"][label] == pytest.approx(value) and claim["verdicts"][label] == verdict
    own = results["claims"][2]
    assert own["values"] == {"stories260K": 1.0, model_dir.name: None}
    assert own["verdicts"] == {"stories260K": "holds", model_dir.name: "inconclusive"}
    assert f"Left out: {model_dir.name} pronoun (no items)" in own["rule"]
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "Verdicts" in page
    # a second run with the same seed gives the same figures (seconds aside)
    again = nl.study("scaling", [STORIES], tmp_path / "again", tasks=("pronoun",), epochs=2, **QUIET)
    assert again["models"]["stories260K"]["figures"] == saved["models"]["stories260K"]["figures"]


def test_a_task_below_chance_is_left_out_of_the_verdicts():
    """The claims from stored figures alone: a task the model does below chance (Gemma's capital) does not count."""
    run = {"activscalar": {"held_out": {"flip_rate": 0.9, "parameters": 10}, "other_lengths": {"flip_rate": 0.2}}}
    run["steervec"] = {"held_out": {"flip_rate": 1.0, "parameters": 5000}}
    run["dynscalar"] = {"held_out": {"flip_rate": 0.5, "parameters": 20}, "other_lengths": {"flip_rate": 0.6}}
    bad = copy.deepcopy(run)
    bad["activscalar"]["held_out"]["flip_rate"] = 0.0
    figures = {
        "m": {"tasks": {"ioi": {"model_accuracy": 1.0, "runs": run}, "capital": {"model_accuracy": 0.0, "runs": bad}}}
    }
    kind = STUDIES["scaling"]
    claims = kind.claims(figures, kind.config(tasks=("ioi", "capital")))
    assert [c.verdicts["m"] for c in claims] == ["holds", "holds", "inconclusive"]
    assert claims[0].values["m"] == pytest.approx(-0.1) and claims[1].values["m"] == pytest.approx(0.4)
    assert claims[2].values["m"] == 0.5 and "Left out: m capital (0.00)" in claims[2].rule
    assert all(c.figure for c in claims)
    with pytest.raises(nl.NeuronlabError, match="tasks must be among"):
        kind.config(tasks=("pronoun", "gender"))


def test_the_command_runs_the_study_with_a_changed_setting(tmp_path):
    from typer.testing import CliRunner

    from neuronlab.cli import app

    out = tmp_path / "scaling"
    args = ["study", "scaling", "-m", str(STORIES), "--out", str(out), "--size", "smoke", "--set", "epochs=2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "- ActivScalar flips held-out prompts" in result.output and "stories260K: " in result.output
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["epochs"] == 2 and saved["config"]["tasks"] == ["ioi"]
    assert saved["models"]["stories260K"]["figures"]["tasks"]["ioi"]["runs"]["activscalar"]["epochs"] <= 2
