"""What the real-model studies (`neuronlab study`, docs/real-models.md) rely on, checked against the
packaged models themselves: the sentences a model writes for a word, pooled expert responses against hooked
activations, word probabilities and the logit lens against the model's own logits, o-vector patching and
learned scalars at identity against the plain model, SLAM's MSD against numpy on recorded stats."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import neuronlab as nl
from neuronlab.evaluate.perplexity import continuation_ids
from neuronlab.models.sites import decoder_layers

from .conftest import flores

pytestmark = pytest.mark.real


def test_the_model_writes_sentences_that_hold_each_word_through_its_own_prompt(real):
    """SmolLM2-Instruct is asked through its chat template, Gemma (base) continues the few-shot examples; every
    kept sentence holds the word (or an inflection) and none is the prompt itself."""
    from neuronlab.data.concepts import generate_concepts, is_instruct, word_pattern

    name, _, model, tok = real
    assert is_instruct(model, tok) == (name == "smollm2-135m-instruct")
    concepts = generate_concepts(model, tok, ["river", "quickly"], per_concept=3, max_new_tokens=24, progress=False)
    for word, sets in concepts.items():
        assert sets["positive"] and all(word_pattern(word).search(s) for s in sets["positive"])
        assert not any("Sentence:" in s or "Word:" in s for s in sets["positive"])
        assert set(sets["negative"]) <= {s for w, o in concepts.items() if w != word for s in o["positive"]}


def test_pooled_responses_are_the_hooked_activations_max_over_real_tokens(real):
    from neuronlab.select.experts import responses

    _, _, model, tok = real
    sentences = flores("eng", 2)
    resp = responses(model, tok, sentences, "act", "max", batch_size=2, dtype=torch.float32, progress=False)
    for row, text in enumerate(sentences):
        enc = tok(text, return_tensors="pt")
        real_tokens = ~torch.isin(enc["input_ids"][0], torch.tensor(tok.all_special_ids))
        for layer in (0, len(decoder_layers(model)) - 1):
            with torch.no_grad(), nl.trace(model, [f"layers.{layer}.act"]) as tr:
                model(**enc)
            want = tr[nl.Site(layer, "act")][0][real_tokens].float().amax(0)
            assert torch.allclose(resp[row, layer], want, rtol=1e-4, atol=1e-5)


def test_word_probability_and_the_logit_lens_are_the_models_own(real):
    from neuronlab.analyze.lens import logit_lens
    from neuronlab.evaluate.concept_steering import word_probability

    _, _, model, tok = real
    prompts = ["The capital of France is", "My favourite animal is the"]
    with torch.no_grad():
        own = [model(**tok(p, return_tensors="pt")).logits[0, -1].float().softmax(-1) for p in prompts]
    first = [continuation_ids(tok, p, " Paris")[1][0] for p in prompts]
    want = sum(float(o[t]) for o, t in zip(own, first, strict=True)) / 2
    assert word_probability(model, tok, prompts, "Paris") == pytest.approx(want, rel=1e-4)
    lens = logit_lens(model, tok, prompts, [" Paris", " cat"], k=1)
    last = lens["layers"][max(lens["layers"])]
    for row, o in enumerate(own):  # the last layer's lens is the model's own next-token distribution
        assert last["top"][row][0][1] == pytest.approx(float(o.max()), rel=1e-3)
        t = continuation_ids(tok, prompts[row], [" Paris", " cat"][row])[1][0]
        assert last["target_rank"][row] == int((o > o[t]).sum())


def test_a_zero_o_vector_changes_nothing_and_ablating_the_last_ffn_changes_the_logits(real):
    from neuronlab.analyze.arithmetic import ablate_from, patch_o_vector, relation_items, score_relation

    _, _, model, tok = real
    pairs = [("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo")]
    items = relation_items(pairs, "The capital of {x} is {y}", shots=2)
    plain = score_relation(model, tok, items, exact=False)
    d_model = model.config.hidden_size
    assert patch_o_vector(model, tok, torch.zeros(d_model), [0], items, exact=False)["ranks"] == plain["ranks"]
    assert plain["accuracy"] >= 0.6  # both models know these capitals
    last = len(decoder_layers(model)) - 1
    assert ablate_from(model, tok, items, layers=[0], exact=False)[0]["accuracy"] < plain["accuracy"]
    assert set(ablate_from(model, tok, items, layers=[last], exact=False)) == {last}


def test_scalars_at_identity_leave_the_logit_difference_the_models_own(real):
    from neuronlab.data.contrast import ioi_task
    from neuronlab.learn.scalars import ScalingConfig, evaluate_scaling, init_scaling

    _, _, model, tok = real
    items = ioi_task(n_items=6)
    got = evaluate_scaling(model, tok, init_scaling(model, ScalingConfig(), 4), items)
    diffs = []
    with torch.no_grad():
        for item in items:
            z = model(**tok(item["prompt"], return_tensors="pt")).logits[0, -1].float()
            t, f = (continuation_ids(tok, item["prompt"], item[k])[1][0] for k in ("target", "foil"))
            diffs.append(float(z[t] - z[f]))
    assert got["logit_diff_before"] == pytest.approx(np.mean(diffs), rel=1e-4, abs=1e-4)
    assert got["kl"] == 0.0 and got["logit_diff_change"] == 0.0


def test_slam_msd_equals_numpy_on_the_recorded_stats(real):
    _, _, model, tok = real
    stats = nl.record(model, tok, {"eng": flores("eng", 3), "fra": flores("fra", 3)}, site="act", progress=False)
    sel = nl.select_layers(stats, k=3, method="msd")
    share = (stats.active.double() / stats.tokens.double()[:, None, None]).numpy()  # [langs, layers, neurons]
    counts = (share > 0.5).sum(-1).astype(float)  # activated neurons per language and layer
    msd = ((counts - counts.mean(0)) ** 2).mean(0)
    assert np.allclose(sel.scores, msd)
    assert sel.layers == sorted(np.argsort(-msd, kind="stable")[:3].tolist())
