"""Perplexity and continuation scores against numpy log-softmax over unpadded single-text runs."""

import math

import numpy as np
import pytest
import torch

import neuronlab as nl

from ..conftest import TEXTS, tiny_model


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def nll_by_hand(model, ids):
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double().numpy()
    lp = log_softmax(logits)
    return -sum(lp[i, ids[i + 1]] for i in range(len(ids) - 1)), len(ids) - 1


@pytest.mark.parametrize("arch", ["llama", "gpt2", "opt"])
def test_perplexity_is_token_weighted_and_masks_padding(arch, tok):
    model = tiny_model(arch)
    texts = TEXTS["en"] + TEXTS["fr"]
    total = count = 0
    for t in texts:
        nll, n = nll_by_hand(model, tok(t)["input_ids"])  # BOS at 0 is context only
        total, count = total + nll, count + n
    expected = math.exp(total / count)
    assert nl.perplexity(model, tok, texts, batch_size=3) == pytest.approx(expected, rel=1e-5)


def test_perplexity_honours_an_active_plan(tok):
    model = tiny_model("llama")
    plain = nl.perplexity(model, tok, TEXTS["en"])
    with nl.apply(model, [nl.Zero()]):
        zeroed = nl.perplexity(model, tok, TEXTS["en"])
    assert zeroed != pytest.approx(plain)
    assert nl.perplexity(model, tok, TEXTS["en"]) == plain
    with pytest.raises(nl.NeuronlabError, match="non-empty"):
        nl.perplexity(model, tok, ["", " "])


def test_continuation_logprob(tok):
    model = tiny_model("gpt2")
    prompts, conts = ["the cat", "a much longer prompt here"], [" sat", "!!"]
    got = nl.continuation_logprob(model, tok, prompts, conts, batch_size=2)
    for k, (p, c) in enumerate(zip(prompts, conts)):
        ids = tok(p + c)["input_ids"]  # one token per character: the prompt's tokens are a prefix
        with torch.no_grad():
            lp = log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double().numpy())
        n_p = len(tok(p)["input_ids"])
        expected = sum(lp[i - 1, ids[i]] for i in range(n_p, len(ids)))
        assert got[k].item() == pytest.approx(expected, rel=1e-5)
