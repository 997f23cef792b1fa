"""The language study (LAPE neurons deactivated and amplified) as one call and one command, on the stored FLORES toy
(tests/fixtures/toys/flores7, trained on lines 0-799 of 7 FLORES languages; the study skips those lines):
results.json holds the figures the claims are computed from, the claims are the figures' arithmetic, neurons per
layer are recounted from neurons.json, and one cell of the perplexity matrix is recomputed from the model's own
loss with the neurons zeroed by a plain forward hook."""

import json
import math

import pytest
import torch

import neuronlab as nl
from neuronlab.data.corpora import read_text_dir
from neuronlab.study import render

from ..conftest import FLORES, TOYS, needs_shared

TOY = TOYS / "flores7"
LANGS = ("arb_Arab", "ita_Latn", "kor_Hang", "vie_Latn")
SMALL = dict(
    data=str(FLORES),
    languages=LANGS,
    skip_lines=800,  # the toy was trained on lines 0-799
    record_lines=30,
    eval_lines=6,
    top_rate=0.3,  # a 2048-neuron toy: 1% would leave a handful a language
    lss_items=4,
    prompts=2,
    max_new_tokens=6,
    attribution_lines=6,
    max_length=256,  # the lines whole (the hand-computed perplexity takes each line as one window)
)
pytestmark = [pytest.mark.slow, needs_shared(FLORES)]


def _perplexity_by_hand(model, tok, lines: list[str], zeroed: dict[int, list[int]]) -> float:
    """exp(token-weighted mean NLL) of the lines, one at a time, with the listed FFN activations set to zero by a
    forward hook on each GPT-2 block's activation function."""

    def zero(idx):
        def hook(_module, _inputs, output):
            output = output.clone()
            output[..., idx] = 0
            return output

        return hook

    handles = [model.transformer.h[layer].mlp.act.register_forward_hook(zero(idx)) for layer, idx in zeroed.items()]
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for line in lines:
                ids = torch.tensor([tok(line)["input_ids"][:256]])
                loss = model(input_ids=ids, labels=ids).loss.item()
                total, count = total + loss * (ids.shape[1] - 1), count + ids.shape[1] - 1
    finally:
        for h in handles:
            h.remove()
    return math.exp(total / count)


def test_the_study_measures_what_its_files_and_the_model_say_and_its_claims_are_the_figures_arithmetic(tmp_path):
    torch.set_num_threads(2)
    out = tmp_path / "language"
    results = nl.study("language", [TOY], out, size="smoke", log=lambda *_: None, **SMALL)
    saved = json.loads((out / "results.json").read_text())
    assert saved["claims"] == json.loads(json.dumps(results["claims"])) and saved["size"] == "smoke"
    assert saved["config"]["languages"] == list(LANGS) and saved["config"]["config"] == "LanguageStudyConfig"
    run = saved["models"]["flores7"]
    assert {"record", "perplexity, deactivated", "LSS", "generation", "attribution: LSS"} <= set(run["seconds"])
    f, folder = run["figures"], out / "flores7"
    for name in ("stats.safetensors", "neurons.json", "attribution_neurons.json", "results.json", "report.html"):
        assert (folder / name).is_file(), name
    assert "neuron browser" in run["seconds"] and (folder / "view" / "index.html").is_file()  # top contexts kept
    assert f["targets"] == list(LANGS) and f["layers"] == run["model"]["n_layers"] == 4

    # neurons per layer, recounted from the saved neuron set
    ns = nl.NeuronSet.load(folder / "neurons.json")
    assert f["neurons_per_layer"] == [sum(len(ns[g].get(i, [])) for g in ns.groups) for i in range(4)]
    assert f["neurons"]["kor_Hang"] == [len(ns["kor_Hang"].get(i, [])) for i in range(4)]

    # one perplexity cell from the model's own loss: plain, and with Korean's neurons zeroed by a hook
    model, tok = nl.load_model(TOY)
    held = {lang: read_text_dir(FLORES, "*.devtest", start=800)[lang][30:36] for lang in ("kor_Hang", "ita_Latn")}
    ppl = f["perplexity"]
    for lang, lines in held.items():
        plain = _perplexity_by_hand(model, tok, lines, {})
        assert ppl["baseline"][lang] == pytest.approx(plain, rel=1e-4)
        zeroed = _perplexity_by_hand(model, tok, lines, ns["kor_Hang"])
        assert ppl["change"]["kor_Hang"][lang] == pytest.approx(zeroed / plain - 1, rel=1e-3, abs=1e-5)

    # every claim's value and verdict by hand from the figures
    assert len(saved["claims"]) == 5 and (out / "report.html").read_text().count("data:image/png;base64,") == 5
    by = lambda start: next(c for c in saved["claims"] if c["claim"].startswith(start))  # noqa: E731
    per_layer = f["neurons_per_layer"]
    depth = (per_layer[0] + per_layer[3]) / sum(per_layer) / 0.5  # 4 layers: the outer ones are the first and last
    change, lss, gen = ppl["change"], f["lss_off_diagonal"], f["generation"]
    own = sum(all(change[t][t] > v for k, v in change[t].items() if k != t) for t in LANGS) / 4
    steer = sum(lss[t] > 0.5 for t in LANGS) / 4
    moved = sum(gen["steered"][t] > gen["baseline"][t] for t in LANGS) / 4
    theirs = f["attribution"]["lss_off_diagonal"]
    gap = sum(lss[t] - theirs[t] for t in theirs) / len(theirs)
    expect = {
        "Language-specific neurons sit mostly": (depth, 1.5, 1),
        "Deactivating a language's neurons": (own, 0.7, 0.5),
        "Amplifying a language's neurons steers": (steer, 0.7, 0.5),
        "Amplifying a language's neurons makes": (moved, 0.7, 0.5),
        "LAPE's neurons steer toward": (gap, 0.05, 0),
    }
    for start, (value, holds, fails) in expect.items():
        claim = by(start)
        assert claim["values"]["flores7"] == pytest.approx(value), start
        verdict = "holds" if value >= holds else "does not hold" if value <= fails else "inconclusive"
        assert claim["verdicts"]["flores7"] == verdict, start
    # the toy's language neurons behave as the papers say (measured: 1.76, 1.0, 1.0, 0.75; docstring of the demo test)
    assert depth > 1 and own >= 0.75 and steer >= 0.75
    # the model's own report renders again from its results.json alone
    render(saved, out)
    assert json.loads((out / "results.json").read_text())["claims"] == saved["claims"]


def test_the_command_runs_the_study_with_changed_settings(tmp_path):
    from typer.testing import CliRunner

    from neuronlab.cli import app

    out = tmp_path / "language"
    args = ["study", "language", "-m", str(TOY), "--out", str(out), "--size", "smoke"]
    sets = {
        **{k: SMALL[k] for k in ("data", "skip_lines", "top_rate")},
        "languages": "kor_Hang,vie_Latn",
        "record_lines": 12,
        "eval_lines": 3,
        "lss_items": 2,
        "prompts": 1,
        "max_new_tokens": 3,
        "attribution": "none",
    }
    cli = [f"{k}={v}" for k, v in sets.items()]
    result = CliRunner().invoke(app, [*args, *[a for text in cli for a in ("--set", text)]])
    assert result.exit_code == 0, result.output
    assert "- Deactivating a language's neurons raises its own perplexity most: flores7: " in result.output
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["languages"] == ["kor_Hang", "vie_Latn"] and saved["config"]["attribution"] == "none"
    assert saved["claims"][-1]["verdicts"] == {"flores7": "inconclusive"}  # no attribution neurons to compare
    # the same settings again, as a library call: the same figures
    again = nl.study("language", [TOY], tmp_path / "again", size="smoke", log=lambda *_: None, overrides=cli)
    assert again["models"]["flores7"]["figures"] == saved["models"]["flores7"]["figures"]
    bad = CliRunner().invoke(app, [*args, "--set", f"data={tmp_path / 'nowhere'}"])
    assert bad.exit_code == 2 and "no folder" in bad.output and "--set data=FOLDER" in bad.output
