"""Steering plans and evaluators: values by hand, LSS aggregation by hand, and the layer-stat variants."""

import math

import numpy as np
import pytest
import torch

import neuronlab as nl
from neuronlab.data.tasks import lss_items_from_texts, prompts_from_texts, read_lss_items
from neuronlab.evaluate.steering import factor_sweep, generation_shift, lss_matrix, perplexity_matrix
from neuronlab.models.sites import Site

from ..conftest import TEXTS, tiny_model
from ..select.test_lape import planted_model


def test_layer_stat_variants_use_the_current_input():
    model = tiny_model("gpt2")
    ids = torch.tensor([[1, 5, 9, 14, 22]])
    seen = {}
    with torch.no_grad(), nl.hooked(model, {Site(1, "act"): lambda h: seen.setdefault("plain", h.clone())}):
        model(input_ids=ids)
    plain = seen["plain"][0].double().numpy()  # [pos, d_ff]
    ns = nl.NeuronSet({"x": {1: [2, 7]}})
    for variant, expected in [
        ("p10", np.percentile(plain, 10, axis=-1)),
        ("layer_max", plain.max(-1)),
        ("add_layer_max", None),
    ]:
        got = {}
        plan = nl.steering_plan(ns, "x", variant)
        with (
            torch.no_grad(),
            nl.apply(model, plan),
            nl.hooked(model, {Site(1, "act"): lambda h: got.setdefault("h", h.clone())}),
        ):
            model(input_ids=ids)
        h = got["h"][0].double().numpy()
        if expected is None:
            expected = plain[:, [2, 7]] + plain.max(-1, keepdims=True)
        else:
            expected = np.repeat(expected[:, None], 2, axis=1)
        np.testing.assert_allclose(h[:, [2, 7]], expected, rtol=1e-5, atol=1e-6)


def test_p_max_plan_sets_each_neuron_to_its_value():
    model, tok, texts, planted = planted_model()
    stats = nl.record(model, tok, texts, pooled_texts=10, progress=False)
    ns = nl.NeuronSet(planted, meta={"site": "act"})
    plan = nl.steering_plan(ns, "A", "p_max", stats=stats, n_texts=10)
    values = nl.activation_values(stats, "max", 10)[0]
    got = {}
    with (
        torch.no_grad(),
        nl.apply(model, plan),
        nl.hooked(model, {Site(1, "act"): lambda h: got.setdefault("h", h.clone())}),
    ):
        model(input_ids=tok(["ijkl"], return_tensors="pt").input_ids)
    torch.testing.assert_close(got["h"][0, :, [3, 17]], values[1, [3, 17]].float().expand(5, 2))
    with pytest.raises(nl.NeuronlabError, match="needs the Stats"):
        nl.steering_plan(ns, "A", "p_median")
    with pytest.raises(nl.NeuronlabError, match="unknown steering variant"):
        nl.steering_plan(ns, "A", "boost")


def test_lss_matrix_counts_items_whose_score_rises():
    model, tok = tiny_model("llama"), None
    from ..conftest import char_tokenizer

    tok = char_tokenizer()
    texts = {
        "en": ["the cat sat on the mat today", "a dog ran far away from home"],
        "fr": ["le chat est sur le tapis rouge", "un chien court loin de la maison"],
        "de": ["die katze sitzt auf der matte", "ein hund rennt weit weg von hier"],
    }
    items = lss_items_from_texts(texts, n_items=2)
    assert len(items) == 6 and items[0]["objects"]["fr"] == " sur"
    plans = {t: nl.Plan([nl.Scale(factor=3.0 + k, neurons=[k, k + 5, k + 9])]) for k, t in enumerate(texts)}
    result = lss_matrix(model, tok, items, list(texts), plans.__getitem__)

    def s(item, t):
        lp = nl.continuation_logprob(
            model, tok, [item["prompt"]] * 2, [item["objects"][t], item["objects"][item["lang"]]]
        )
        return float(lp[0] - lp[1])

    for t in texts:
        for lang in texts:
            if lang == t:
                assert math.isnan(result["matrix"][lang][t])
                continue
            ups = []
            for item in (i for i in items if i["lang"] == lang):
                before = s(item, t)
                with nl.apply(model, plans[t]):
                    ups.append(s(item, t) > before)
            assert result["matrix"][lang][t] == pytest.approx(sum(ups) / len(ups))
        off = [result["matrix"][lang][t] for lang in texts if lang != t]
        assert result["off_diagonal"][t] == pytest.approx(sum(off) / len(off))


def test_perplexity_matrix_generation_and_sweep_run(tok):
    model = tiny_model("llama")
    texts = {"en": TEXTS["en"], "fr": TEXTS["fr"]}
    plan_for = lambda t: nl.Plan([nl.Zero(neurons=[0, 1, 2] if t == "en" else [3, 4])])  # noqa: E731
    ppl = perplexity_matrix(model, tok, texts, ["en", "fr"], plan_for)
    assert ppl["baseline"]["en"] == pytest.approx(nl.perplexity(model, tok, TEXTS["en"], batch_size=16))
    with nl.apply(model, plan_for("fr")):
        assert ppl["steered"]["fr"]["en"] == pytest.approx(nl.perplexity(model, tok, TEXTS["en"], batch_size=16))
    gen = generation_shift(model, tok, prompts_from_texts(texts, 2), ["en", "fr"], plan_for, max_new_tokens=4)
    assert set(gen["baseline"]) == {"en", "fr"} and all(0 <= v <= 1 for v in gen["steered"].values())
    items = lss_items_from_texts({"en": ["the cat sat on the mat"], "fr": ["le chat est sur le tapis"]})
    sweep = factor_sweep(
        model,
        tok,
        lambda t, f: nl.Plan([nl.Scale(factor=f, neurons=[1, 2])]),
        [1.0, 3.0],
        ["en", "fr"],
        texts,
        items,
        max_ppl_increase=0.0,
    )
    assert sweep["rows"][0]["off_target_ppl_change"]["en"] == pytest.approx(0.0)  # factor 1 changes nothing
    assert sweep["best"]["en"] == 1.0  # only factor 1 keeps perplexity within +0%


def test_lss_items_file(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text('{"lang": "fr", "prompt": "Paris est", "objects": {"fr": " en", "en": " in"}}\n\n')
    assert read_lss_items(path)[0]["objects"]["en"] == " in"
    path.write_text('{"lang": "de", "prompt": "x", "objects": {"fr": " en"}}\n')
    with pytest.raises(nl.NeuronlabError, match="own lang"):
        read_lss_items(path)
    path.write_text("")
    with pytest.raises(nl.NeuronlabError, match="no items"):
        read_lss_items(path)


def test_language_groups_sharing_a_code_are_refused_and_no_prompts_give_nan(tok):
    from neuronlab.evaluate.langid import LanguageIdentifier

    with pytest.raises(nl.NeuronlabError, match="'zh' and 'zho_Hans' are the same language"):
        LanguageIdentifier(["zh", "zho_Hans", "en"])
    model = tiny_model("gpt2")
    out = generation_shift(model, tok, {"en": ["the cat"]}, ["en"], lambda t: nl.Plan([]), max_new_tokens=2)
    assert math.isnan(out["baseline"]["en"]) and math.isnan(out["steered"]["en"])
