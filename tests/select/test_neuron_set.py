import json

import pytest

import neuronlab as nl

from ..conftest import tiny_model


def test_indices_are_sorted_and_sets_combine():
    a = nl.NeuronSet({"fr": {"2": [9, 1, 1], 0: [3]}, "de": {1: [4]}}, meta={"method": "lape", "site": "act"})
    b = nl.NeuronSet({"fr": {2: [1, 7]}, "es": {0: [0]}})
    assert a.groups == ["fr", "de"] and a["fr"][2] == [1, 9] and a["fr"][0] == [3]
    assert a.counts() == {"fr": {0: 1, 2: 2}, "de": {1: 1}} and a.total() == 4 and a.total("fr") == 3
    assert (a | b)["fr"] == {0: [3], 2: [1, 7, 9]} and (a | b)["es"] == {0: [0]}
    assert (a & b)["fr"] == {2: [1]} and (a & b)["de"] == {}
    assert a.subset(["de"]).groups == ["de"]
    assert a.layers() == {0: [3], 1: [4], 2: [1, 9]}
    assert a.pairs("fr") == {(0, 3), (2, 1), (2, 9)} and a.pairs() == {(0, 3), (1, 4), (2, 1), (2, 9)}
    with pytest.raises(nl.NeuronlabError, match="group 'it' is not in this neuron set"):
        a["it"]


def test_save_load_round_trip(tmp_path):
    a = nl.NeuronSet({"fr": {12: [5, 40]}}, meta={"method": "lape", "top_rate": 0.01})
    a.save(tmp_path / "n.json")
    b = nl.NeuronSet.load(tmp_path / "n.json")
    assert b.neurons == a.neurons and b.meta == a.meta and b["fr"][12] == [5, 40]
    (tmp_path / "bad.json").write_text(json.dumps({"fr": {}}))
    with pytest.raises(nl.NeuronlabError, match="not a neuronlab neuron set"):
        nl.NeuronSet.load(tmp_path / "bad.json")
    (tmp_path / "empty.json").write_text("")
    with pytest.raises(nl.NeuronlabError, match="not JSON"):
        nl.NeuronSet.load(tmp_path / "empty.json")


def test_validate_against_a_model():
    model = tiny_model("llama")  # 3 layers, d_ff 64, d_model 32
    nl.NeuronSet({"fr": {2: [63]}}).validate(model)
    with pytest.raises(nl.NeuronlabError, match="neuron index 64 is out of range"):
        nl.NeuronSet({"fr": {2: [64]}}).validate(model)
    with pytest.raises(nl.NeuronlabError, match="layer 3 is out of range"):
        nl.NeuronSet({"fr": {3: [1]}}).validate(model)
    with pytest.raises(nl.NeuronlabError, match="index 40 is out of range"):
        nl.NeuronSet({"fr": {0: [40]}}, meta={"site": "resid"}).validate(model)
    with pytest.raises(nl.NeuronlabError, match="negative"):
        nl.NeuronSet({"fr": {0: [-1]}})


def test_a_set_made_for_another_model_is_refused():
    made_for = nl.model_info(tiny_model("llama", seed=0))
    ns = nl.NeuronSet({"fr": {0: [1]}}, meta={"site": "act", "model": made_for})
    ns.validate(tiny_model("llama", seed=0))
    with pytest.raises(nl.NeuronlabError, match="made on another model"):
        ns.validate(tiny_model("llama", seed=1))


def test_a_tokenizer_without_pad_token_gets_one():
    from neuronlab.models.load import ensure_pad_token
    from neuronlab.testing import char_tokenizer

    tok = char_tokenizer()
    tok.pad_token = None
    assert tok.pad_token_id is None
    ensure_pad_token(tok)
    assert tok.pad_token == "</s>"


def test_union_and_intersection_keep_site_and_model(tok):
    from ..conftest import TEXTS, tiny_model

    model = tiny_model("llama")
    stats = nl.record(model, tok, TEXTS, site="neuron", pooled_texts=2, progress=False)
    a = nl.NeuronSet({"en": {0: [1, 2]}}, {"method": "lape", "site": "neuron", "model": stats.meta["model"]})
    b = nl.NeuronSet(
        {"en": {0: [2, 3]}, "fr": {1: [4]}}, {"method": "x", "site": "neuron", "model": stats.meta["model"]}
    )
    for combined in (a | b, a & b):
        assert combined.meta["site"] == "neuron" and combined.meta["model"] == stats.meta["model"]
        plan = nl.steering_plan(combined, "en", "zero")
        assert plan.interventions[0].site == "neuron"  # not silently "act"
    with pytest.raises(nl.NeuronlabError, match="made on another model"):
        (a | b).validate(tiny_model("llama", seed=1))
    with pytest.raises(nl.NeuronlabError, match="different sites"):
        a | nl.NeuronSet({"en": {0: [1]}}, {"site": "act"})
    other = nl.NeuronSet({"en": {0: [1]}}, {"site": "neuron", "model": nl.model_info(tiny_model("llama", seed=1))})
    with pytest.raises(nl.NeuronlabError, match="made on another model"):
        a & other


def test_steering_plan_checks_the_stats_site_and_model(tok):
    from ..conftest import TEXTS, tiny_model

    model = tiny_model("llama")
    act = nl.record(model, tok, TEXTS, site="act", pooled_texts=2, progress=False)
    ns = nl.lape(act, top_rate=0.2, filter_rate=0.5, activation_bar_ratio=0.5)
    group = next(g for g in ns.groups if ns.total(g))
    assert len(nl.steering_plan(ns, group, "p_max", stats=act, n_texts=2)) == 1
    neuron = nl.record(model, tok, TEXTS, site="neuron", pooled_texts=2, progress=False)
    with pytest.raises(nl.NeuronlabError, match="recorded at site neuron but the neurons index site act"):
        nl.steering_plan(ns, group, "p_max", stats=neuron, n_texts=2)
    elsewhere = nl.record(tiny_model("llama", seed=1), tok, TEXTS, site="act", pooled_texts=2, progress=False)
    with pytest.raises(nl.NeuronlabError, match="made on another model"):
        nl.steering_plan(ns, group, "p_max", stats=elsewhere, n_texts=2)
