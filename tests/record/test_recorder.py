"""record against statistics the test computes by hand, one text at a time without padding (numpy)."""

import numpy as np
import pytest
import torch

import neuronlab as nl
from neuronlab.data.batching import batches, windows
from neuronlab.models.sites import Site

from ..conftest import ARCHS, TEXTS, tiny_model


def per_token_values(model, tok, text, site="act", max_length=None):
    """[tokens, layers, width] values of `site` for one text run alone, special tokens dropped (numpy)."""
    ids = tok(text)["input_ids"]
    windows = [ids] if max_length is None else [ids[s : s + max_length] for s in range(0, len(ids), max_length)]
    rows = []
    n = model.config.num_hidden_layers
    for w in windows:
        got = {}
        hooks = {
            Site(layer, site): (lambda layer: lambda h: got.__setitem__(layer, h[0].double().numpy()))(layer)
            for layer in range(n)
        }
        with torch.no_grad(), nl.hooked(model, hooks):
            model(input_ids=torch.tensor([w]))
        keep = [i for i, t in enumerate(w) if t not in tok.all_special_ids]
        rows.append(np.stack([got[layer][keep] for layer in range(n)], axis=1))
    return np.concatenate(rows, axis=0)


def by_hand(model, tok, texts, **kw):
    out = {}
    for group, items in texts.items():
        x = np.concatenate([per_token_values(model, tok, t, **kw) for t in items], axis=0)
        out[group] = dict(
            tokens=x.shape[0],
            active=(x > 0).sum(0),
            sum=x.sum(0),
            sum_sq=(x * x).sum(0),
            max=x.max(0),
            abs_sum=np.abs(x).sum(0),
        )
    return out


def assert_matches(stats, expected):
    for g, exp in expected.items():
        i = stats.index(g)
        assert int(stats.tokens[i]) == exp["tokens"]
        np.testing.assert_array_equal(stats.active[i].numpy(), exp["active"])
        np.testing.assert_allclose(stats.max[i].numpy(), exp["max"], rtol=1e-5, atol=1e-5)
        # a batch is summed in float32: the error bound grows with the sum of magnitudes (resid: hundreds)
        for key, scale in (("sum", exp["abs_sum"]), ("sum_sq", exp["sum_sq"])):
            assert (np.abs(getattr(stats, key)[i].numpy() - exp[key]) <= 1e-5 + 1e-6 * scale).all(), key


@pytest.mark.parametrize("arch", ARCHS)
def test_counts_match_hand_computation_with_padding(arch, tok):
    model = tiny_model(arch)
    stats = nl.record(model, tok, TEXTS, site="act", batch_size=3, progress=False)
    assert stats.groups == ["en", "fr"]
    assert stats.tokens.dtype == torch.int64 and stats.sum.dtype == torch.float64
    assert stats.active.shape == (2, 3, nl.model_info(model)["d_ff"])
    assert_matches(stats, by_hand(model, tok, TEXTS))


@pytest.mark.parametrize("site", ["neuron", "ffn_out", "resid", "attn_out"])
def test_other_sites(site, tok):
    model = tiny_model("gpt2")  # learned positions: padding on the wrong side would shift them
    stats = nl.record(model, tok, TEXTS, site=site, batch_size=2, progress=False)
    assert_matches(stats, by_hand(model, tok, TEXTS, site=site))


def test_long_texts_are_split_into_windows_not_cut(tok):
    model = tiny_model("llama")
    texts = {"en": ["abcdefghijklmnopqrstuvwxyz" * 2, "short one"]}
    stats = nl.record(model, tok, texts, max_length=10, batch_size=4, progress=False)
    assert int(stats.tokens[0]) == 52 + 9  # every character counted; BOS is not
    assert_matches(stats, by_hand(model, tok, texts, max_length=10))
    cut = nl.record(model, tok, texts, max_length=10, truncate=True, progress=False)
    assert int(cut.tokens[0]) == 9 + 9


@pytest.mark.parametrize("bucket", [1, 3])
def test_token_cap_is_exact(tok, bucket):
    model = tiny_model("llama")
    stats = nl.record(model, tok, TEXTS, max_tokens=30, batch_size=2, bucket=bucket, progress=False)
    assert stats.tokens.tolist() == [30, 30]
    # the first 30 counted tokens of each group, in order
    for g in TEXTS:
        x = np.concatenate([per_token_values(model, tok, t) for t in TEXTS[g]], axis=0)[:30]
        np.testing.assert_allclose(stats.sum[stats.index(g)].numpy(), x.sum(0), rtol=1e-5, atol=1e-5)


def test_pooled_per_text_mean_and_max(tok):
    model = tiny_model("qwen2")
    texts = {"en": ["abcdefghijklmnopqrstuvwxyz" * 2, "short one", "third", "fourth text"]}
    stats = nl.record(model, tok, texts, pooled_texts=3, max_length=16, batch_size=2, progress=False)
    assert stats.pooled_mean.shape == (1, 3, 3, 64) and int(stats.pooled_n[0]) == 3
    for t in range(3):
        x = per_token_values(model, tok, texts["en"][t], max_length=16)
        np.testing.assert_allclose(stats.pooled_mean[0, t].numpy(), x.mean(0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(stats.pooled_max[0, t].numpy(), x.max(0), rtol=1e-4, atol=1e-5)


def test_merge_equals_recording_together(tok, tmp_path):
    model = tiny_model("llama")
    both = nl.record(model, tok, TEXTS, progress=False, pooled_texts=2)
    en = nl.record(model, tok, {"en": TEXTS["en"]}, progress=False, pooled_texts=2)
    fr = nl.record(model, tok, {"fr": TEXTS["fr"]}, progress=False, pooled_texts=2)
    merged = en.merge(fr)
    en.save(tmp_path / "en.safetensors")
    loaded = nl.Stats.load(tmp_path / "en.safetensors")
    assert loaded.groups == ["en"] and loaded.meta == en.meta
    for key in ("tokens", "active", "sum", "sum_sq", "max", "texts", "pooled_mean", "pooled_n"):
        torch.testing.assert_close(getattr(merged, key), getattr(both, key), equal_nan=True)
        torch.testing.assert_close(getattr(loaded, key), getattr(en, key), equal_nan=True)


def test_refuses_stats_of_another_model_or_site(tok):
    a = nl.record(tiny_model("llama", seed=0), tok, {"en": TEXTS["en"]}, progress=False)
    b = nl.record(tiny_model("llama", seed=1), tok, {"fr": TEXTS["fr"]}, progress=False)
    with pytest.raises(nl.NeuronlabError, match="another model"):
        a.merge(b)
    with pytest.raises(nl.NeuronlabError, match="another model"):
        a.check_model(tiny_model("llama", seed=1))
    a.check_model(tiny_model("llama", seed=0))
    c = nl.record(tiny_model("llama", seed=0), tok, {"fr": TEXTS["fr"]}, site="resid", progress=False)
    with pytest.raises(nl.NeuronlabError, match="different sites"):
        a.merge(c)


@pytest.mark.parametrize("bucket", [1, 2])
def test_resume_never_counts_a_text_twice(tok, tmp_path, bucket):
    model = tiny_model("llama")
    texts = {"en": [f"text number {i} " * (1 + i % 3) for i in range(20)], "fr": TEXTS["fr"]}
    full = nl.record(model, tok, texts, batch_size=3, progress=False, pooled_texts=5, bucket=bucket)

    calls = []

    def crash_on_fifth_batch(module, args):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt

    ckpt = tmp_path / "ckpt.safetensors"
    handle = model.register_forward_pre_hook(crash_on_fifth_batch)
    try:
        with pytest.raises(KeyboardInterrupt):
            nl.record(
                model,
                tok,
                texts,
                batch_size=3,
                progress=False,
                pooled_texts=5,
                checkpoint=ckpt,
                checkpoint_every=0,
                bucket=bucket,
            )
    finally:
        handle.remove()
    partial = nl.Stats.load(ckpt)
    assert 0 < int(partial.texts[0]) < 20 and partial.meta["complete"] == []
    resumed = nl.record(model, tok, texts, batch_size=3, progress=False, pooled_texts=5, checkpoint=ckpt, bucket=bucket)
    for key in ("tokens", "active", "sum", "sum_sq", "max", "texts", "pooled_mean", "pooled_n"):
        torch.testing.assert_close(getattr(resumed, key), getattr(full, key), equal_nan=True)
    with pytest.raises(nl.NeuronlabError, match="other settings"):
        nl.record(model, tok, texts, max_length=7, progress=False, pooled_texts=5, checkpoint=ckpt)


def test_length_buckets_count_the_same_tokens_with_less_padding(tok):
    model = tiny_model("gpt2")
    texts = {"en": ["a" * (1 + (7 * i) % 23) for i in range(30)], "fr": TEXTS["fr"]}
    plain = nl.record(model, tok, texts, batch_size=4, max_length=16, bucket=1, progress=False, pooled_texts=3)
    sorted_ = nl.record(model, tok, texts, batch_size=4, max_length=16, bucket=3, progress=False, pooled_texts=3)
    for key in ("tokens", "texts", "active", "pooled_n"):
        assert torch.equal(getattr(sorted_, key), getattr(plain, key)), key
    for key in ("sum", "sum_sq", "max", "pooled_mean", "pooled_max"):
        # other batch shapes change float32 matmul rounding (~1e-6 relative), nothing else
        torch.testing.assert_close(getattr(sorted_, key), getattr(plain, key), rtol=1e-4, atol=1e-4, equal_nan=True)
    assert_matches(sorted_, by_hand(model, tok, texts, max_length=16))

    special = torch.tensor(tok.all_special_ids)
    spans = lambda: windows(tok, texts["en"], 0, 16, False)  # noqa: E731
    plain_b = list(batches(spans(), 4, 0, special, False))
    sorted_b = list(batches(spans(), 4, 0, special, False, bucket=3))
    cells = lambda bs: sum(b.input_ids.numel() for b in bs)  # noqa: E731
    assert cells(sorted_b) < 0.8 * cells(plain_b)
    assert sorted(t for b in sorted_b for t in b.text) == sorted(t for b in plain_b for t in b.text)
    # a bucket (3 batches, ending where a text ends) runs longest first; only its last batch is a safe point
    end = [b.boundary for b in sorted_b].index(True)
    first = sorted_b[: end + 1]
    assert len(first) >= 3 and not any(b.boundary for b in first[:-1])
    assert [b.input_ids.shape[1] for b in first] == sorted([b.input_ids.shape[1] for b in first], reverse=True)
    in_bucket = {t for b in first for t in b.text}
    assert in_bucket == set(range(len(in_bucket))) and first[-1].done == len(in_bucket) and first[0].done == 0


def test_bad_input_is_named(tok):
    model = tiny_model("llama")
    with pytest.raises(nl.NeuronlabError, match="group 'fr' has no text"):
        nl.record(model, tok, {"en": ["hello"], "fr": ["", "  "]}, progress=False)
    with pytest.raises(nl.NeuronlabError, match="one string"):
        nl.record(model, tok, {"en": "hello"}, progress=False)
    with pytest.raises(nl.NeuronlabError, match=r"RecordConfig.site must be one of act, neuron, .*not 'mlp'"):
        nl.record(model, tok, {"en": ["hello"]}, site="mlp", progress=False)
    with pytest.raises(nl.NeuronlabError, match="no text that yields"):
        nl.record(model, tok, {"en": iter([""])}, progress=False)


def test_fp16_model_accumulates_in_float64(tok):
    model = tiny_model("llama").to(torch.bfloat16)
    stats = nl.record(model, tok, TEXTS, progress=False)
    assert stats.sum.dtype == torch.float64 and stats.active.dtype == torch.int64
    assert torch.isfinite(stats.sum).all()


def test_stats_add_and_state_dict_contract(tok):
    """Stats.add counts [tokens, layers, width] values as numpy does; state_dict / load_state_dict round-trip."""
    from neuronlab.record.stats import Moments

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 3, 6, generator=gen, dtype=torch.float64)
    stats = nl.Stats.empty(["a", "b"], 3, 6, {"site": "act"})
    stats.add("b", x[:20])
    stats.add("b", x[20:])
    v = x.numpy()
    assert stats.tokens.tolist() == [0, 50]
    assert np.array_equal(stats.active[1].numpy(), (v > 0).sum(0)) and np.allclose(stats.sum[1].numpy(), v.sum(0))
    assert np.allclose(stats.sum_sq[1].numpy(), (v**2).sum(0)) and np.allclose(stats.max[1].numpy(), v.max(0))
    m = Moments.zeros(6)
    m.add(x[:, 2])
    assert torch.equal(m.active, stats.active[1, 2]) and torch.allclose(m.sum, stats.sum[1, 2])
    again = nl.Stats.empty([], 0, 0, {})
    again.load_state_dict(stats.state_dict())
    assert again.groups == ["a", "b"] and torch.equal(again.sum_sq, stats.sum_sq) and again.meta["site"] == "act"
    with pytest.raises(nl.NeuronlabError, match="do not fit"):
        stats.add("a", x[:, :2])
    with pytest.raises(nl.NeuronlabError, match="one row per group"):
        again.load_state_dict({**stats.state_dict(), "groups": ["a"]})


def test_a_streamed_corpus_is_read_only_as_far_as_needed(tok):
    """Texts may be any iterable (a generator, a streamed dataset): record reads them in order, a chunk at a time."""
    model, read = tiny_model("llama"), []

    def stream():
        for i in range(100_000):
            read.append(i)
            yield f"text {i}"

    stats = nl.record(model, tok, {"en": stream()}, max_tokens=50, batch_size=4, progress=False)
    assert int(stats.tokens[0]) == 50 and len(read) <= 512  # one tokenizer chunk (256 texts) and the one after
