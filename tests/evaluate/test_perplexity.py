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
    for k, (p, c) in enumerate(zip(prompts, conts, strict=True)):
        ids = tok(p + c)["input_ids"]  # one token per character: the prompt's tokens are a prefix
        with torch.no_grad():
            lp = log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double().numpy())
        n_p = len(tok(p)["input_ids"])
        expected = sum(lp[i - 1, ids[i]] for i in range(n_p, len(ids)))
        assert got[k].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("arch", ["gemma2", "gemma3_text", "llama", "opt", "phi", "phi3"])
@pytest.mark.parametrize("by", ["vocabulary", "rows"])
def test_token_nll_equals_the_models_own_loss_in_small_chunks(arch, by, monkeypatch):
    """The scoring path (stop at the unembedding, unembed only the scored rows, in chunks: slices of the vocabulary
    with an online log-sum-exp, or for any other unembedding module a few rows at a time) gives the loss the model
    computes itself from its full logits, soft-cap (Gemma 2) and unembedding bias (Phi) included, on right-padded
    rows."""
    from neuronlab.data import scoring as perplexity

    model = tiny_model(arch)
    if arch == "gemma2":
        model.config.final_logit_softcapping = 2.0  # strong enough to matter at these logit sizes
    monkeypatch.setattr(perplexity, "CHUNK_VALUES", 3 * model.config.vocab_size)  # 3 rows a chunk
    monkeypatch.setattr(perplexity, "MIN_SLICE", 7)  # vocabulary slices of 7 or more entries
    if by == "rows":  # an unembedding that is not a plain nn.Linear (a quantized or wrapped layer) takes rows
        head = model.get_output_embeddings()
        head.__class__ = type("WrappedLinear", (torch.nn.Linear,), {})
    ids = torch.tensor([[1, 5, 9, 14, 22, 30, 41], [1, 7, 8, 9, 10, 0, 0]])
    mask = (ids != 0).long()
    targets = mask.bool()
    targets[:, 0] = False
    with torch.no_grad():
        got = perplexity.token_nll(model, ids, mask, targets)
        for r in range(2):
            n = int(mask[r].sum())
            own = model(input_ids=ids[r : r + 1, :n], labels=ids[r : r + 1, :n]).loss
            torch.testing.assert_close(
                got[targets[:r].sum() : targets[: r + 1].sum()].mean(), own, rtol=1e-5, atol=1e-6
            )
    with pytest.raises(nl.NeuronlabError, match="position 0"):
        perplexity.token_nll(model, ids, mask, torch.ones_like(targets))
