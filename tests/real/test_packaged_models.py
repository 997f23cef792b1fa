"""The packaged real models (Gemma-3-270M, SmolLM2-135M-Instruct; 4-bit GGUF files dequantized to float32),
checked against themselves: the converted checkpoint against transformers' own GGUF load, the ArchSpec proven on
the real weights, perplexity against the model's own loss, hooks against hidden_states, record and LAPE on real
text, and plan positions while generating against a cacheless rerun. Run with `python -m pytest -m real`; each
test skips, saying why, where a model or the gguf package is not installed."""

from __future__ import annotations

import math

import pytest
import torch

import neuronlab as nl
from neuronlab.models import gguf

from .conftest import flores

pytestmark = pytest.mark.real


def test_the_converted_checkpoint_is_the_gguf_model(real):
    """Loading the .gguf path (a checkpoint converted once into the cache) gives what transformers' own GGUF load
    gives: the same logits bit for bit, the same tokens, the same model identity."""
    _name, path, model, tok = real
    direct, direct_tok = gguf.load_from_gguf(path)
    text = "The capital of France is Paris. La capitale de la France est Paris. 北京是中国的首都。"
    assert tok(text)["input_ids"] == direct_tok(text)["input_ids"]
    ids = tok([text], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**ids).logits, direct(**ids).logits)
    assert nl.model_info(model)["name_or_path"] == str(path)
    assert nl.models.load.same_model(nl.model_info(model), nl.model_info(direct)) is None
    assert "quantization_config" not in model.config.to_dict()


def test_the_archspec_is_proven_on_the_real_weights(real):
    """The table's spec equals the one derived from the module tree, and every identity holds on the real weights:
    resid(l) = hidden_states[l+1], h + attn_out + ffn_out = resid, the neurons are the only path through the down
    projection, and the unembedding of the final norm is the model's logits."""
    from neuronlab.models.derive import derive_spec
    from neuronlab.models.verify import verify_spec

    _, _, model, _ = real
    spec = nl.arch_spec(model)
    assert spec == nl.ARCH_SPECS[model.config.model_type]
    assert derive_spec(model) == spec
    assert verify_spec(model, spec) == []


def test_perplexity_is_the_models_own_loss(real):
    """nl.perplexity of one text = exp of the loss the model computes itself; a batch of texts of different
    lengths (padding, large-vocabulary chunks) = the token-weighted mean of the texts alone."""
    _, _, model, tok = real
    texts = flores("eng", 4) + flores("fra", 4)
    total = count = 0.0
    for text in texts:
        ids = tok([text], return_tensors="pt")["input_ids"]
        with torch.no_grad():
            loss = float(model(input_ids=ids, labels=ids).loss)
        n = ids.shape[1] - 1
        assert math.log(nl.perplexity(model, tok, [text])) == pytest.approx(loss, rel=1e-5)
        total, count = total + loss * n, count + n
    assert math.log(nl.perplexity(model, tok, texts, batch_size=3)) == pytest.approx(total / count, rel=1e-5)


def test_record_counts_every_token_and_lape_runs(real):
    """record on real text counts exactly the tokens of the texts (minus BOS), its sums equal the hooked
    activations summed by hand, and LAPE finds neurons for both languages."""
    _, _, model, tok = real
    texts = {"eng": flores("eng", 6), "fra": flores("fra", 6)}
    stats = nl.record(model, tok, texts, site="act", batch_size=4, max_length=128, progress=False)
    special = set(tok.all_special_ids)
    for g, lines in enumerate(texts.values()):
        n = sum(sum(t not in special for t in tok(line)["input_ids"]) for line in lines)
        assert int(stats.tokens[g]) == n
    layer = stats.sum.shape[1] - 1
    ids = tok(texts["eng"][0], return_tensors="pt")["input_ids"]
    with nl.trace(model, [nl.Site(layer, "act")]) as tr, torch.no_grad():
        model(input_ids=ids)
    keep = torch.tensor([t not in special for t in ids[0].tolist()])
    one = nl.record(model, tok, {"eng": texts["eng"][:1]}, site="act", progress=False)
    torch.testing.assert_close(
        one.sum[0, layer], tr[nl.Site(layer, "act")][0][keep].double().sum(0), rtol=1e-4, atol=1e-3
    )
    ns = nl.lape(stats, top_rate=0.01)
    assert set(ns.groups) == {"eng", "fra"} and all(ns.total(g) > 0 for g in ns.groups)


def test_plan_positions_while_generating_equal_a_rerun(real):
    """Generating with the KV cache (Gemma: sliding-window and global layers) under a "last" plan on left-padded
    prompts: every step's logits equal a rerun of the whole sequence without a cache, the change written at the
    same absolute positions; and an empty plan leaves the logits bit-identical."""
    _, _, model, tok = real
    prompts = ["The capital of France is", "Once upon a time, in a small village by the sea, there"]
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left")
    p, steps = enc["input_ids"].shape[1], 3
    layer = len(nl.models.sites.decoder_layers(model)) // 2
    plan = [nl.Scale(factor=3.0, site="ffn_out", layers=[layer], positions="last")]
    same = [nl.Scale(factor=3.0, site="ffn_out", layers=[layer], positions=slice(p - 1, None))]
    with torch.no_grad(), nl.apply(model, plan):
        out = model.generate(
            **enc,
            max_new_tokens=steps,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=tok.pad_token_id,
        )
    for step in range(steps):
        full = out.sequences[:, : p + step]
        mask = torch.cat([enc["attention_mask"], torch.ones(2, step, dtype=torch.long)], 1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad(), nl.apply(model, same):
            ref = model(input_ids=full, attention_mask=mask, position_ids=positions, use_cache=False).logits[:, -1]
        torch.testing.assert_close(out.logits[step], ref, rtol=1e-3, atol=1e-3)
    with torch.no_grad():
        plain = model(**enc).logits
        with nl.apply(model, nl.Plan([])):
            assert torch.equal(model(**enc).logits, plain)
