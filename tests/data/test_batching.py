"""Batched passes with a tokenizer whose pad id lies outside the embedding, and token ids the model lacks."""

import re

import pytest
import torch

import neuronlab as nl
from neuronlab.data.batching import left_padded
from neuronlab.evaluate.steering import generate

from ..conftest import TEXTS, V, char_tokenizer, tiny_model


def _big_pad_tokenizer():
    """The char tokenizer with extra tokens, so that its own pad token gets an id beyond the model's 128 rows
    (as a Qwen2 tokenizer class that adds its own pad token)."""
    tok = char_tokenizer()
    tok.add_tokens([f"<extra{i}>" for i in range(40)])
    tok.add_special_tokens({"pad_token": "<newpad>"})
    assert tok.pad_token_id >= V
    return tok


@pytest.mark.parametrize("arch", ["qwen2", "gpt2"])
def test_pad_id_outside_the_embedding_is_never_fed(arch):
    model, tok, plain = tiny_model(arch), _big_pad_tokenizer(), char_tokenizer()
    got = nl.record(model, tok, TEXTS, batch_size=3, progress=False)
    want = nl.record(model, plain, TEXTS, batch_size=3, progress=False)
    assert torch.equal(got.active, want.active) and torch.allclose(got.sum, want.sum)
    assert nl.perplexity(model, tok, TEXTS["en"], batch_size=3) == pytest.approx(
        nl.perplexity(model, plain, TEXTS["en"])
    )
    # the same greedy tokens: ids 99..127 decode to added tokens with one tokenizer and to nothing with the other
    drop_added = lambda texts: [re.sub(r"\s*<extra\d+>", "", t) for t in texts]  # noqa: E731
    assert drop_added(generate(model, tok, ["ab", "the cat"], 4)) == generate(model, plain, ["ab", "the cat"], 4)


def test_token_ids_beyond_the_embedding_fail_clearly():
    model, tok = tiny_model("llama"), _big_pad_tokenizer()
    with pytest.raises(nl.NeuronlabError, match=r"outside the model's embedding.*resize_token_embeddings"):
        nl.record(model, tok, {"en": ["abc <extra35> d"]}, progress=False)
    with pytest.raises(nl.NeuronlabError, match="outside the model's embedding"):
        nl.perplexity(model, tok, ["abc <extra35> d"])


def test_left_padding_never_changes_the_tokenizer():
    model, tok = tiny_model("gpt2"), char_tokenizer()
    assert tok.padding_side == "right"
    batches = left_padded(model, tok, ["a", "abc", "ab"], batch_size=2)
    _, first = next(batches)  # the generator is paused here: another caller may use the tokenizer meanwhile
    assert tok.padding_side == "right" and tok(["a", "abc"], padding=True)["attention_mask"][0] == [1, 1, 0, 0]
    assert first["attention_mask"][0].tolist() == [0, 0, 1, 1]
    list(batches)
    assert tok.padding_side == "right"
