"""The `router` site of a mixture of experts: expert usage per group through `record`, checked by hand (numpy)."""

import numpy as np
import pytest
import torch
import transformers

import neuronlab as nl
from neuronlab.models.sites import decoder_layers, get_module
from neuronlab.testing import char_tokenizer, tiny_causal_lm

pytestmark = pytest.mark.skipif(
    int(transformers.__version__.split(".")[0]) < 5,
    reason="routers return their choice (weights, expert indices) from transformers 5",
)
TEXTS = {"en": ["the cat sat on the mat", "a dog"], "fr": ["le chat est sur le tapis"]}


def test_router_usage_equals_softmax_top_k_by_hand():
    model, tok = tiny_causal_lm("mixtral"), char_tokenizer()
    spec, k = nl.arch_spec(model), model.config.num_experts_per_tok
    stats = nl.record(model, tok, TEXTS, site="router", batch_size=2, progress=False)
    n_layers, experts = model.config.num_hidden_layers, model.config.num_local_experts
    assert stats.active.shape == (2, n_layers, experts)

    for g, texts in TEXTS.items():  # the router's own input, captured by a plain hook, one text at a time
        active, total = np.zeros((n_layers, experts)), np.zeros((n_layers, experts))
        for text in texts:
            ids = tok(text)["input_ids"]
            inputs, handles = {}, []
            for layer, block in enumerate(decoder_layers(model)):
                router = get_module(block, spec.router)
                handles.append(
                    router.register_forward_hook(
                        lambda m, a, o, layer=layer: inputs.__setitem__(layer, a[0].reshape(-1, a[0].shape[-1]))
                    )
                )
            with torch.no_grad():
                model(input_ids=torch.tensor([ids]))
            for h in handles:
                h.remove()
            for layer in range(n_layers):
                w = get_module(decoder_layers(model)[layer], spec.router).weight.detach().double().numpy()
                logits = inputs[layer].double().numpy()[1:] @ w.T  # BOS is not counted
                p = np.exp(logits - logits.max(-1, keepdims=True))
                p /= p.sum(-1, keepdims=True)
                top = np.argsort(-p, axis=-1)[:, :k]
                chosen = np.take_along_axis(p, top, -1)
                weights = np.zeros_like(p)
                np.put_along_axis(weights, top, chosen / chosen.sum(-1, keepdims=True), -1)
                active[layer] += (weights > 0).sum(0)
                total[layer] += weights.sum(0)
        i = stats.index(g)
        np.testing.assert_array_equal(stats.active[i].numpy(), active)
        np.testing.assert_allclose(stats.sum[i].numpy(), total, rtol=1e-5, atol=1e-5)
        assert (stats.active[i].sum(-1) == k * stats.tokens[i]).all()  # every token uses exactly k experts


@pytest.mark.parametrize("model_type", ["qwen2_moe", "olmoe", "gpt_oss"])
def test_every_token_uses_top_k_experts(model_type):
    model = tiny_causal_lm(model_type)
    k = model.config.num_experts_per_tok
    stats = nl.record(model, char_tokenizer(), TEXTS, site="router", progress=False)
    assert (stats.active.sum(-1) == k * stats.tokens[:, None]).all()


def test_router_is_read_only_and_only_on_experts():
    with pytest.raises(nl.NeuronlabError, match="read-only"):
        nl.Scale(factor=2.0, site="router")
    with pytest.raises(nl.NeuronlabError, match="no router"):
        nl.record(tiny_causal_lm("llama"), char_tokenizer(), TEXTS, site="router", progress=False)
