"""Attribution against independent computations: Integrated Gradients' completeness (sum of scores = f(a) - f(b)),
gradient x activation against central finite differences, both in float64 with log-likelihoods computed in
numpy/SciPy; and a planted language neuron gets the top attribution of its language."""

import numpy as np
import pytest
import torch
from scipy.special import log_softmax
from typer.testing import CliRunner

import neuronlab as nl
from neuronlab.cli import app
from neuronlab.select.attribution import attribute, attribution_neurons

from ..conftest import tiny_model

TEXTS = {
    "en": ["the cat sat on the mat", "a b c", "hello world, this is english!"],
    "fr": ["le chat est sur le tapis", "bonjour le monde"],
}


def log_likelihood(model, tok, texts, hook=None) -> float:
    """Sum over texts (each run alone, no padding) of log P(token t+1 | tokens <= t), in numpy; `hook` maps
    (site, value) on the FFN activations when given."""
    total = 0.0
    for text in texts:
        ids = tok(text)["input_ids"]
        with torch.no_grad(), nl.hooked(model, hook or {}):
            logits = model(input_ids=torch.tensor([ids])).logits[0].double().numpy()
        total += float(np.take_along_axis(log_softmax(logits[:-1], -1), np.array(ids[1:])[:, None], 1).sum())
    return total


@pytest.fixture(scope="module")
def model64():
    return tiny_model("llama", seed=1).double()


@pytest.mark.parametrize("baseline", ["zero", "mean"])
def test_integrated_gradients_complete(model64, tok, baseline):
    texts = {"en": TEXTS["en"]}
    stats = nl.record(model64, tok, TEXTS, progress=False) if baseline == "mean" else None
    coarse = attribute(model64, tok, texts, method="ig", steps=8, baseline=baseline, stats=stats, progress=False)
    fine = attribute(
        model64, tok, texts, method="ig", steps=64, baseline=baseline, stats=stats, batch_size=2, progress=False
    )
    mean = None if stats is None else (stats.sum.sum(0) / stats.tokens.sum()).numpy()
    f_a = log_likelihood(model64, tok, texts["en"])
    for layer in range(3):
        b = 0.0 if mean is None else torch.tensor(mean[layer])
        f_b = log_likelihood(model64, tok, texts["en"], {nl.Site(layer, "act"): lambda h, b=b: torch.zeros_like(h) + b})
        want = f_a - f_b
        assert abs(want) > 0.1  # a layer that matters, so the check means something
        # stated tolerance: 1% of f(a) - f(b) at 64 steps (measured: 0.01-0.4% on these layers); the midpoint
        # rule's error falls as 1/steps^2, so 8x the steps cut it by well over 10x
        error = abs(float(fine.scores[0, layer].sum()) - want)
        assert error < 1e-2 * abs(want)
        assert abs(float(coarse.scores[0, layer].sum()) - want) > 10 * error


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "opt"])  # opt: its FFN runs on flattened tokens
def test_gradient_times_activation_equals_finite_differences(arch, tok):
    # families whose float64 forward is float64 throughout (Llama's RMSNorm and rotary run in float32, which
    # leaves ~1e-7 of f as noise: too much for a difference quotient)
    model = tiny_model(arch, seed=1).double()
    attr = attribute(model, tok, TEXTS, method="gxa", batch_size=2, progress=False)
    assert attr.tokens.tolist() == [sum(len(tok(t)["input_ids"]) - 1 for t in TEXTS[g]) for g in TEXTS]
    eps = 1e-5
    for g, group in enumerate(TEXTS):
        for layer, neuron in [(0, 3), (1, 40), (2, 17), (2, 63)]:

            def scaled(factor):  # the neuron's activation times `factor` at every position
                def fn(h):
                    h = h.clone()
                    h[..., neuron] *= factor
                    return h

                return {nl.Site(layer, "act"): fn}

            # d/de f(a (1 + e)) at e = 0 is sum over positions of a df/da: gradient x activation
            fd = (
                log_likelihood(model, tok, TEXTS[group], scaled(1 + eps))
                - log_likelihood(model, tok, TEXTS[group], scaled(1 - eps))
            ) / (2 * eps)
            assert float(attr.scores[g, layer, neuron]) == pytest.approx(fd, rel=1e-6, abs=1e-8)


def planted_gpt2():
    """A tiny GPT-2 whose neuron 7 of the last layer is always on (bias 3, no weights) and writes the direction
    that raises the letters n-z over a-m: the 'hi' language's neuron."""
    model = tiny_model("gpt2", seed=2)
    tok = nl.testing.char_tokenizer()
    hi = tok.convert_tokens_to_ids(list("nopqrstuvwxyz"))
    lo = tok.convert_tokens_to_ids(list("abcdefghijklm"))
    unembed = model.lm_head.weight.detach()
    u = unembed[hi].mean(0) - unembed[lo].mean(0)
    mlp = model.transformer.h[2].mlp
    with torch.no_grad():
        mlp.c_fc.weight[:, 7] = 0  # Conv1D: [in, out]
        mlp.c_fc.bias[7] = 3.0
        mlp.c_proj.weight[7] = 2.0 * u / u.norm()
    return model, tok


def test_planted_language_neuron_gets_the_top_attribution():
    model, tok = planted_gpt2()
    rng = np.random.default_rng(0)
    texts = {
        name: ["".join(rng.choice(list(chars), 24)) for _ in range(6)]
        for name, chars in (("lo", "abcdefghijklm"), ("hi", "nopqrstuvwxyz"))
    }
    for method in ("gxa", "ig"):
        attr = attribute(model, tok, texts, method=method, steps=8, progress=False)
        assert attr.per_token[1].flatten().argmax() == 2 * 64 + 7, method  # the planted neuron, for hi
        assert float(attr.scores[0, 2, 7]) < 0  # and it costs lo
        ns = attribution_neurons(attr, per_group=1)
        assert ns["hi"] == {2: [7]} and ns["lo"] != {2: [7]}, ns.neurons
        assert attribution_neurons(attr, counts={"hi": 3, "lo": 0}).total("hi") == 3


def test_selection_and_errors(model64, tok, tmp_path):
    attr = attribute(model64, tok, TEXTS, method="gxa", progress=False)
    path = tmp_path / "a.safetensors"
    attr.save(path)
    again = nl.Attribution.load(path)
    assert torch.equal(again.scores, attr.scores) and again.meta["method"] == "gxa"
    own = attribution_neurons(attr, per_group=5, specific=False)
    per_token = attr.per_token.numpy()
    for g, group in enumerate(TEXTS):  # the 5 highest per-token scores, by hand
        best = np.argsort(-per_token[g].ravel(), kind="stable")[:5]
        assert sorted((i // 64, i % 64) for i in best) == sorted((la, n) for la, idx in own[group].items() for n in idx)
    lape_like = nl.NeuronSet({"en": {0: [1, 2]}, "fr": {1: [3]}})
    assert {g: attribution_neurons(attr, counts=lape_like).total(g) for g in TEXTS} == {"en": 2, "fr": 1}
    with pytest.raises(nl.NeuronlabError, match="baseline 'mean' needs stats"):
        attribute(model64, tok, TEXTS, baseline="mean", progress=False)
    with pytest.raises(nl.NeuronlabError, match="not both"):
        attribution_neurons(attr, per_group=2, counts=lape_like)


def test_find_attribution_command(tmp_path):
    model_dir = tmp_path / "m"
    from ..conftest import save_tiny

    save_tiny(model_dir, "llama")
    for g, lines in TEXTS.items():
        (tmp_path / f"{g}.txt").write_text("\n".join(lines) + "\n")
    args = [
        "find",
        "attribution",
        "-m",
        str(model_dir),
        "--text",
        f"en={tmp_path / 'en.txt'}",
        "--text",
        f"fr={tmp_path / 'fr.txt'}",
        "--per-group",
        "4",
        "--out",
        str(tmp_path / "n.json"),
        "--scores",
        str(tmp_path / "a.safetensors"),
        "--method",
        "ig",
        "--steps",
        "2",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    ns = nl.NeuronSet.load(tmp_path / "n.json")
    assert ns.meta["method"] == "attribution (ig)" and all(ns.total(g) <= 4 for g in TEXTS)
    shown = CliRunner().invoke(app, ["inspect", str(tmp_path / "a.safetensors")]).output
    assert "attribution (ig, baseline zero, 2 steps)" in shown
