"""LAPE against an independent numpy re-computation, its worked example, and a planted model."""

import numpy as np
import pytest
import torch

import neuronlab as nl
from neuronlab.select.lape import activated, activation_values

from ..conftest import char_tokenizer, tiny_model


def stats_from_probability(p: np.ndarray, groups, tokens=1000) -> nl.Stats:
    """Stats whose activation probability is exactly p [groups, layers, neurons] (p * tokens integral)."""
    _g, n_layers, width = p.shape
    s = nl.Stats.empty(list(groups), n_layers, width, {"site": "act"})
    s.tokens[:] = tokens
    s.active[:] = torch.from_numpy(np.rint(p * tokens).astype(np.int64))
    return s


def lape_by_hand(p, groups, top_rate, filter_rate, bar_ratio):
    """Tang et al.'s rule, written out in numpy."""
    p = np.transpose(p, (1, 2, 0))  # layers, neurons, langs
    with np.errstate(invalid="ignore", divide="ignore"):
        q = p / p.sum(-1, keepdims=True)
    q = np.nan_to_num(q)
    ent = -np.where(q > 0, q * np.log(np.where(q > 0, q, 1)), 0).sum(-1)
    flat = np.sort(p.flatten())
    kth = lambda r: flat[max(1, round(len(flat) * r)) - 1]  # noqa: E731
    ent[(p > kth(filter_rate)).sum(-1) == 0] = np.inf
    order = np.argsort(ent.flatten(), kind="stable")[: round(ent.size * top_rate)]
    out = {g: {} for g in groups}
    for f in order:
        if not np.isfinite(ent.flatten()[f]):
            continue
        layer, idx = divmod(int(f), p.shape[1])
        for li, g in enumerate(groups):
            if p[layer, idx, li] > kth(bar_ratio):
                out[g].setdefault(layer, []).append(idx)
    return {g: {k: sorted(v) for k, v in d.items()} for g, d in out.items()}


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("rates", [(0.01, 0.95, 0.95), (0.1, 0.9, 0.8), (0.2, 0.5, 0.97)])
def test_lape_equals_numpy_recomputation(seed, rates):
    rng = np.random.default_rng(seed)
    groups = ["en", "fr", "de", "zh"]
    p = rng.beta(0.5, 2.0, size=(4, 3, 200))
    p[:, 0, :10] = 0.0  # never-firing neurons: entropy 0 but filtered out
    p[1, 2, 20:30] = 0.99  # clearly French neurons
    p = np.rint(p * 1000) / 1000
    ns = nl.lape(stats_from_probability(p, groups), nl.LapeConfig(*rates))
    assert ns.neurons == lape_by_hand(p, groups, *rates)
    assert ns.meta["method"] == "lape" and ns.meta["top_rate"] == rates[0]


@pytest.mark.parametrize("top_rate", [0.05, 0.3, 0.6])
def test_lape_breaks_entropy_ties_by_layer_then_index(top_rate):
    """Probabilities from three values: hundreds of neurons share an entropy, and the cut falls inside a tie."""
    rng = np.random.default_rng(7)
    p = rng.choice([0.1, 0.5, 0.9], size=(3, 4, 50))
    ns = nl.lape(stats_from_probability(p, ["en", "fr", "de"]), nl.LapeConfig(top_rate, 0.5, 0.6))
    assert ns.neurons == lape_by_hand(p, ["en", "fr", "de"], top_rate, 0.5, 0.6)
    assert ns.meta["selected"] == round(p[0].size * top_rate)


def test_worked_example_of_the_docstring():
    p = np.array([[[0.9, 0.5]], [[0.1, 0.5]]])  # [langs, layers, neurons]
    ns = nl.lape(stats_from_probability(p, ["en", "fr"]), top_rate=0.5, filter_rate=0.5, activation_bar_ratio=0.5)
    assert ns.neurons == {"en": {0: [0]}, "fr": {}}
    assert ns.meta["filter_value"] == pytest.approx(0.5)


def planted_model():
    """Llama with three letter-languages; the gate of chosen neurons sees only the language direction.

    Embeddings: token of language k = 3 * e_k + noise in dims 3.. ; attention and FFN outputs are zeroed, so
    every layer's FFN reads the embedding. Planted neuron rows are +-5 on e_0..e_2 (fire for their languages
    only); all other rows live in the noise dims, so they fire for about half of the tokens of every language.
    """
    model = tiny_model("llama")
    tok = char_tokenizer()
    letters = {"A": "abcdefgh", "B": "ijklmnop", "C": "qrstuvwx"}
    planted = {"A": {1: [3, 17]}, "B": {0: [5]}, "C": {1: [40]}}
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        emb[:, :3] = 0
        for k, chars in enumerate(letters.values()):
            for ch in chars:
                emb[tok.convert_tokens_to_ids(ch), k] = 3.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
            layer.mlp.gate_proj.weight[:, :3] = 0
        for k, layers in enumerate(planted.values()):
            for layer, idx in layers.items():
                row = torch.full((3,), -5.0)
                row[k] = 5.0
                w = model.model.layers[layer].mlp.gate_proj.weight
                w[idx] = 0
                w[idx, :3] = row
    texts = {
        lang: ["".join(chars[int(i)] for i in torch.randint(0, 8, (30,), generator=g)) for _ in range(12)]
        for lang, chars in letters.items()
    }
    return model, tok, texts, planted


def test_lape_recovers_planted_language_neurons():
    model, tok, texts, planted = planted_model()
    stats = nl.record(model, tok, texts, pooled_texts=10, progress=False)
    n_planted = sum(len(i) for layers in planted.values() for i in layers.values())
    ns = nl.lape(stats, top_rate=n_planted / (3 * 64))
    assert ns.neurons == planted
    base = activated(stats, n_texts=10)
    for lang, layers in planted.items():
        for layer, idx in layers.items():
            assert set(idx) <= set(base[lang].get(layer, []))
            assert not any(set(idx) & set(base[o].get(layer, [])) for o in planted if o != lang)


def test_activation_values_are_max_and_median_of_text_means():
    model, tok, texts, _ = planted_model()
    stats = nl.record(model, tok, texts, pooled_texts=10, progress=False)
    means = stats.pooled_mean[:, :10].double().numpy()  # groups, texts, layers, neurons
    np.testing.assert_allclose(activation_values(stats, "max", 10).numpy(), means.max(1))
    np.testing.assert_allclose(activation_values(stats, "median", 10).numpy(), np.median(means, axis=1))
    np.testing.assert_allclose(activation_values(stats, "max", 4).numpy(), means[:, :4].max(1))
    with pytest.raises(nl.NeuronlabError, match="pooled_texts"):
        activation_values(nl.record(model, tok, texts, progress=False))
