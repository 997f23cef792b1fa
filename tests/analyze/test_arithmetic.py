"""o-vectors on a planted model: a known FFN vector maps token a to token b; extraction finds it and patching
it into unrelated prompts makes b the top-1 token."""

import json

import pytest
import torch

import neuronlab as nl
from neuronlab.analyze.arithmetic import (
    ablate_from,
    extract_o_vector,
    patch_o_vector,
    read_pairs,
    relation_items,
    score_relation,
)

from ..conftest import SHARED, char_tokenizer, needs_shared, tiny_model

RELATIONS = SHARED / "data" / "relations"


def planted_vector_model():
    """Llama whose layer-1 FFN adds c * v, v the unembedding direction of token b, exactly when the token is "a".

    Attention outputs and every other FFN output are zero; one neuron j of layer 1 reads a direction only
    token "a" has (embedding dim 0), and its down-projection column is v.
    """
    model, tok = tiny_model("llama"), char_tokenizer()
    a, b, j = tok.convert_tokens_to_ids("a"), tok.convert_tokens_to_ids("b"), 7
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        emb[:, 0] = 0
        emb[a, 0] = 5.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        mlp = model.model.layers[1].mlp
        mlp.gate_proj.weight[j] = 0
        mlp.gate_proj.weight[j, 0] = 1.0
        mlp.up_proj.weight[j] = 0
        mlp.up_proj.weight[j, 0] = 1.0
        v = model.lm_head.weight[b].clone()  # the unembedding direction of b
        v[0] = 0
        mlp.down_proj.weight[:, j] = v
    return model, tok, v / v.norm()


def test_extraction_recovers_the_planted_vector_and_patching_transfers_it():
    model, tok, v = planted_vector_model()
    o = extract_o_vector(model, tok, ["xyz a", "qa", "mno pa"], layer=1)
    assert torch.nn.functional.cosine_similarity(o, v, dim=0) > 0.99
    nonsense = [{"prompt": p, "target": "b"} for p in ["table mug free", "qqq rrr", "zz", "hello there"]]
    plain = score_relation(model, tok, nonsense)
    assert plain["accuracy"] == 0
    patched = patch_o_vector(model, tok, o * 3, layers=[1], items=nonsense)
    assert patched["accuracy"] == 1 and patched["reciprocal_rank"] == 1
    # ablation: zeroing FFN outputs from layer 1 on removes the mapping; from layer 2 on keeps it
    items = [{"prompt": p, "target": "b"} for p in ["xyz a", "qa", "mno pa"]]
    assert score_relation(model, tok, items)["accuracy"] == 1
    abl = ablate_from(model, tok, items, layers=[1, 2])
    assert abl[1]["accuracy"] == 0 and abl[2]["accuracy"] == 1
    # mean-ablation replaces layer 1's output by its mean over all prompt tokens: most tokens are not "a",
    # so the mean is a small multiple of v and the mapping weakens but the direction stays
    mean_abl = ablate_from(model, tok, items, layers=[1], mean=True)
    assert mean_abl[1]["reciprocal_rank"] > abl[1]["reciprocal_rank"]


def test_exact_match_needs_every_target_token():
    model, tok, _ = planted_vector_model()
    items = [{"prompt": "xyz a", "target": "b"}, {"prompt": "xyz a", "target": "bb"}]
    score = score_relation(model, tok, items)
    assert score["accuracy"] == 1 and score["multi_token"] == 0.5
    with torch.no_grad():
        ids = tok("xyz ab", return_tensors="pt").input_ids
        second_is_b = model(input_ids=ids).logits[0, -1].argmax().item() == tok.convert_tokens_to_ids("b")
    assert score["exact"] == (1.0 if second_is_b else 0.5)


def test_relation_items_and_pairs(tmp_path):
    (tmp_path / "p.csv").write_text('"country","capital"\n"Poland","Warsaw"\n"France","Paris"\n"Peru","Lima"\n')
    pairs = read_pairs(tmp_path / "p.csv")
    assert pairs[0] == ("Poland", "Warsaw")
    items = relation_items(pairs, template="{x}: {y}", shots=2)
    assert items[0]["target"] == " Warsaw" and items[0]["prompt"].endswith("\nPoland:")
    assert items[0]["prompt"].count("\n") == 2 and "Poland" not in items[0]["prompt"].split("\n")[0]
    (tmp_path / "p.json").write_text(json.dumps([{"input": "go", "output": "went"}]))
    assert read_pairs(tmp_path / "p.json") == [("go", "went")]
    with pytest.raises(nl.NeuronlabError, match="too few"):
        relation_items(read_pairs(tmp_path / "p.json"))
    with pytest.raises(nl.NeuronlabError, match="must end with"):
        relation_items(pairs, template="{y} is the capital of {x}")


@needs_shared(RELATIONS)
def test_shared_relation_files_load():
    assert len(read_pairs(RELATIONS / "merullo" / "world_capitals.csv")) > 100
    assert len(read_pairs(RELATIONS / "function_vectors" / "present-past.json")) > 50
