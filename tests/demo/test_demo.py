"""End to end: the embedded demo model through the CLI, and a tiny model trained here on FLORES-200.

Both check the papers' claims as numbers (see issue 3): deactivating L's neurons hurts L most, amplifying
T's neurons pushes LSS above 0.5 and moves generations toward T.
"""

import json

import pytest
from typer.testing import CliRunner

import neuronlab as nl
from neuronlab.cli import app
from neuronlab.demo.pipeline import DEMO_MODEL, PipelineConfig, run

from ..conftest import FLORES, TOYS, needs_shared

pytestmark = pytest.mark.slow


def test_demo_runs_offline_and_shows_the_effects(tmp_path):
    assert (DEMO_MODEL / "model.safetensors").stat().st_size <= 5 * 2**20
    # the defaults but one sweep factor (the sweep itself is tested in tests/evaluate; 3 factors cost 30 s more)
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--factor", "4"])
    assert result.exit_code == 0, result.output
    report = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert report.count("data:image/png;base64,") >= 5
    for name in ("stats.safetensors", "neurons.json", "activated.json", "results.json"):
        assert (tmp_path / name).is_file()
    res = json.loads((tmp_path / "results.json").read_text())
    c = res["checks"]
    assert c["deactivation_hits_own_language"] >= 0.8, c
    assert all(v > 0.5 for v in res["lss"]["off_diagonal"].values()), res["lss"]["off_diagonal"]
    gen = res["generation"]
    assert sum(gen["steered"].values()) > sum(gen["baseline"].values()), gen
    assert res["seconds"] > 0 and [r["factor"] for r in res["sweep"]["rows"]] == [4.0]  # time: benchmarks, not tests
    # LAPE against attribution neurons, as many a language; the report links its neuron table into the browser
    a = res["attribution"]
    lape = nl.NeuronSet.load(tmp_path / "neurons.json")
    found = nl.NeuronSet.load(tmp_path / "attribution_neurons.json")
    assert {t: found.total(t) for t in res["targets"]} == {t: lape.total(t) for t in res["targets"]}
    assert set(a["jaccard"]) == set(res["targets"]) and all(0 <= j < 1 for j in a["jaccard"].values())
    assert set(a["lss"]["off_diagonal"]) == set(res["targets"])
    assert "LAPE neurons against attribution neurons" in report and 'href="view/index.html#L' in report
    page = (tmp_path / "view" / "index.html").read_text(encoding="utf-8")
    top = res["top_neurons"][0]
    assert f'"id": "L{top["layer"]}N{top["neuron"]}"' in page and "(attribution)" in page
    again = CliRunner().invoke(app, ["report", str(tmp_path / "results.json"), "--out", str(tmp_path / "r2.html")])
    assert again.exit_code == 0 and (tmp_path / "r2.html").stat().st_size > 10_000


@pytest.mark.toy
@needs_shared(FLORES)
def test_tiny_flores_model_has_language_neurons(tmp_path):
    """A stored toy (tests/fixtures/toys/flores7, `python -m neuronlab.demo.toys`): a 4-layer GPT-2-architecture
    model (ReLU FFN, 2048 neurons) trained once on FLORES lines 0-799 of 7 of the 14 languages (every other one: arb,
    eng, hin, ita, kor, rus, vie; 700 steps; torch 2.14.1, tokenizers 0.23.3), evaluated on lines 800-839 (never
    trained on), LAPE top_rate 0.3. Nothing trains here, so a library release moves these figures only through the
    method (recording, LAPE, the interventions, generation).

    Measured on the stored weights (2026-12-07): deactivation hurts the own language most for 6 of 7 languages (all
    but English); p_max amplification gives off-diagonal LSS 0.95-1.0 for every target and raises the share of
    generations identified as the target for 6 of 7 (from 0% to 10-100%; Korean stays at 0%). Asked: LSS > 0.5 for
    every target; deactivation and generations for >= 5 of 7 (one language of margin). Trained in the test instead,
    torch 2.13 had given 7 of 7 for both. A Llama of the same size (gated FFN) met the deactivation claim but not the
    other two: with a gate, "set the activation to p_max" leaves the sign of the neuron's output to the up projection
    of whatever text is running, so it does not push toward the target language.
    """
    import torch

    from neuronlab.data.corpora import read_text_dir

    torch.set_num_threads(2)
    model, tok = nl.load_model(TOYS / "flores7")  # trained once, stored (neuronlab.demo.toys)
    texts = read_text_dir(FLORES, "*.devtest")
    texts = {lang: texts[lang] for lang in sorted(texts)[::2]}  # the toy's 7 languages
    held = {lang: lines[800:] for lang, lines in texts.items()}  # lines 800-1011 (40 used): never trained on
    # the perplexity matrix under amplification and the factor sweep are not asserted here: skipped (95 s)
    # nor the attribution comparison and the browser (the demo test covers them)
    cfg = PipelineConfig(
        record_lines=120,
        eval_lines=40,
        top_rate=0.3,
        lss_items=20,
        prompts=5,
        amplify_perplexity=False,
        factors=(),
        max_new_tokens=16,
        attribution="none",
        contexts=0,
    )
    res = run(model, tok, held, tmp_path, cfg, progress=False)
    assert res["perplexity_amplify"] is None and res["sweep"] is None and (tmp_path / "report.html").is_file()
    c, lss, gen = res["checks"], res["lss"]["off_diagonal"], res["generation"]
    assert len(res["targets"]) == 7 and c["deactivation_hits_own_language"] >= 0.7, c
    assert all(v > 0.5 for v in lss.values()), lss
    assert c["generation_share_up"] >= 0.7, gen  # measured 6 of 7 (docstring)
