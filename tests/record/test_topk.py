"""Top activating contexts against a brute-force computation over every token (numpy), ties included, in any
batch order, after a resume, and through merge / subset / save."""

import numpy as np
import pytest
import torch

import neuronlab as nl
from neuronlab.models.sites import Site
from neuronlab.record.topk import AFTER, BEFORE, pack

from ..conftest import tiny_model

TEXTS = {
    "en": ["the cat sat on the mat", "a b", "hello world, this is a longer sentence of english text!", "x", "", "ab"],
    "fr": ["le chat est sur le tapis", "bonjour le monde", "ceci est une phrase un peu plus longue", "oui"],
}
K, MAX_LENGTH = 6, 16


def relu_llama():
    """A tiny Llama whose activation is ReLU: many exact zeros, so rarely active neurons tie at the k-th place;
    neurons 0-3 of every layer are dead (value 0 on every token: their top k are the k first tokens)."""
    model = tiny_model("llama", seed=3)
    for layer in model.model.layers:
        layer.mlp.act_fn = torch.nn.ReLU()
        with torch.no_grad():
            layer.mlp.gate_proj.weight[:4] = 0
    return model


def brute_force(model, tok, texts, k):
    """Every counted token of every window, run alone: per layer and neuron the k best by (value desc, key asc)."""
    n_layers = model.config.num_hidden_layers
    rows = []  # (key, values [layers, width], tokens [CONTEXT], acts [layers, width, CONTEXT])
    for g, items in enumerate(texts.values()):
        for t, text in enumerate(items):
            ids = tok(text)["input_ids"]
            for s in range(0, len(ids), MAX_LENGTH):
                w = ids[s : s + MAX_LENGTH]
                got = {}
                hooks = {
                    Site(i, "act"): (lambda i: lambda h: got.__setitem__(i, h[0].float().numpy()))(i)
                    for i in range(n_layers)
                }
                with torch.no_grad(), nl.hooked(model, hooks):
                    model(input_ids=torch.tensor([w]))
                x = np.stack([got[i] for i in range(n_layers)])  # [layers, pos, width]
                for p, token in enumerate(w):
                    if token in tok.all_special_ids:
                        continue
                    around = [p + o for o in range(-BEFORE, AFTER + 1)]
                    inside = [0 <= q < len(w) for q in around]
                    tokens = np.array([w[q] if ok else -1 for q, ok in zip(around, inside, strict=True)])
                    acts = np.stack(
                        [x[:, q] if ok else np.zeros_like(x[:, 0]) for q, ok in zip(around, inside, strict=True)], -1
                    )
                    key = int(pack(g, torch.tensor(t), torch.tensor(s + p)))
                    rows.append((key, x[:, p], tokens, acts))
    values = np.stack([r[1] for r in rows])  # [tokens, layers, width]
    keys = np.array([r[0] for r in rows])
    out = {"value": [], "key": [], "tokens": [], "acts": []}
    for i in range(n_layers):
        order = np.lexsort((np.broadcast_to(keys[:, None], values[:, i].shape), -values[:, i]), axis=0)[:k]
        out["value"].append(np.take_along_axis(values[:, i], order, 0))
        out["key"].append(keys[order])
        out["tokens"].append(np.stack([r[2] for r in rows])[order])  # [k, width, CONTEXT]
        out["acts"].append(
            np.stack([r[3][i] for r in rows])[
                order.ravel(), np.tile(np.arange(order.shape[1]), order.shape[0])
            ].reshape(*order.shape, -1)
        )
    return {name: np.stack(v) for name, v in out.items()}


@pytest.fixture(scope="module")
def setup(tok):
    model = relu_llama()
    return model, brute_force(model, tok, TEXTS, K)


def assert_equal_to(top, want, exact=True):
    """Bit-equal; or (exact=False, float32 values of other batch shapes) values within rounding and the same
    entries wherever the order does not hang on rounding: dead neurons (exact zeros) and values 1e-4 apart."""
    sure = np.ones(want["value"].shape, dtype=bool)
    if exact:
        np.testing.assert_array_equal(top.value.numpy(), want["value"])
    else:
        np.testing.assert_allclose(top.value.numpy(), want["value"], rtol=1e-5, atol=1e-6)
        v = want["value"]
        gap = np.diff(v, axis=1) < -1e-4  # [layers, k - 1, width]: slot j is clear of slot j + 1
        sure[:, :-1] = gap & np.concatenate([np.ones_like(gap[:, :1]), gap[:, :-1]], 1)
        sure[:, -1] = False  # the k+1-th may sit within rounding of it
        sure[:, :, :4] = True  # dead neurons: exact zeros in any batch
        assert sure.mean() > 0.7
    np.testing.assert_array_equal(top.key.numpy()[sure], want["key"][sure])
    np.testing.assert_array_equal(top.tokens.numpy()[sure], want["tokens"][sure])
    np.testing.assert_allclose(top.acts.float().numpy()[sure], want["acts"][sure], rtol=1e-2, atol=1e-6)  # bfloat16


def test_top_contexts_equal_brute_force_in_any_batch_order(setup, tok):
    model, want = setup
    assert (want["value"][:, :, :4] == 0).all() and (want["value"][:, 0, 4:] > 0).all()
    assert (want["value"][:, -1, 4:] == want["value"][:, -2, 4:]).any()  # ties at the k-th place: live neurons too
    # one window a forward (the same float32 values as run alone), windows sorted by length within buckets
    stats = nl.record(
        model, tok, TEXTS, batch_size=1, bucket=3, max_length=MAX_LENGTH, contexts=True, top_k=K, progress=False
    )
    assert stats.top_k == K and stats.meta["settings"]["top_k"] == K
    assert_equal_to(stats.contexts, want)
    # padded batches: padding never competes; values within float32 matmul rounding, the same keys
    padded = nl.record(model, tok, TEXTS, batch_size=4, max_length=MAX_LENGTH, contexts=True, top_k=K, progress=False)
    assert_equal_to(padded.contexts, want, exact=False)
    value, group, text, position = stats.contexts.where(1, 5)[0]
    assert value == want["value"][1, 0, 5] and stats.groups[group] in TEXTS
    assert bytes.fromhex(stats.meta["pieces"][str(int(stats.contexts.tokens[1, 0, 5, BEFORE]))]).decode() == tok.decode(
        [tok(list(TEXTS.values())[group][text])["input_ids"][position]]
    )


@pytest.mark.parametrize("text", ["日本語のテキスト", "Ελληνικά και русский", "مرحبا بالعالم", "plain words"])
def test_token_pieces_rejoin_into_the_text(text):
    """Byte-level BPE splits characters over tokens: the pieces keep bytes, and a context decodes as one stream."""
    from transformers import AutoTokenizer

    from neuronlab.demo.pipeline import DEMO_MODEL
    from neuronlab.record.topk import pieces, texts

    tok = AutoTokenizer.from_pretrained(DEMO_MODEL)  # byte-level BPE (the demo's; loads on transformers 4.x too)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    found = pieces(tok, torch.tensor(ids))
    shown = texts([found[str(i)] for i in ids])
    assert "".join(shown) == tok.decode(ids) and "\ufffd" not in "".join(shown)
    assert len(shown) == len(ids)


def test_top_contexts_survive_a_killed_run_save_merge_and_subset(setup, tok, tmp_path):
    model, want = setup
    settings = dict(batch_size=1, bucket=3, max_length=MAX_LENGTH, contexts=True, top_k=K, progress=False)
    path = tmp_path / "s.safetensors"
    calls = []

    def crash(_module, _args):
        calls.append(1)
        if len(calls) == 9:
            raise KeyboardInterrupt

    handle = model.register_forward_pre_hook(crash)
    with pytest.raises(KeyboardInterrupt):
        nl.record(model, tok, TEXTS, checkpoint=path, checkpoint_every=0, **settings)
    handle.remove()
    assert 0 < int(nl.Stats.load(path).texts.sum()) < 10
    assert_equal_to(nl.record(model, tok, TEXTS, checkpoint=path, **settings).contexts, want)
    assert_equal_to(nl.Stats.load(path).contexts, want)

    en, fr = (nl.record(model, tok, {g: TEXTS[g]}, **settings) for g in ("en", "fr"))
    merged = en.merge(fr)
    assert_equal_to(merged.contexts, want)
    only_fr = merged.subset(["fr"]).contexts
    for layer, neuron in [(0, 0), (2, 7)]:  # fr's own entries, renumbered to group 0, in the same order
        kept = [(v, t, p) for v, g, t, p in merged.contexts.where(layer, neuron) if g == 1]
        assert [(v, t, p) for v, _, t, p in only_fr.where(layer, neuron)] == kept
    with pytest.raises(nl.NeuronlabError, match="same --top-k"):
        en.merge(nl.record(model, tok, {"fr": TEXTS["fr"]}, **{**settings, "top_k": 2}))
    with pytest.raises(nl.NeuronlabError, match="same --top-k"):
        nl.record(model, tok, TEXTS, checkpoint=path, **{**settings, "top_k": 2})
