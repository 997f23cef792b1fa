"""A model spread over CPU and disk by accelerate (device_map with offload): sites, record, apply and learned scalars
work unchanged and give the numbers of the whole model; bake says why it cannot."""

import pytest
import torch

import neuronlab as nl

from ..conftest import TEXTS, save_tiny

PLAN = nl.Plan([nl.Scale(factor=3.0, site="act", neurons=[1, 5, 9]), nl.Add(site="resid", layers=[1], value=0.5)])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    path = save_tiny(tmp_path_factory.mktemp("tiny_llama"), "llama")
    whole, tok = nl.load_model(path)
    device_map = {
        "model.embed_tokens": "cpu",
        "model.rotary_emb": "cpu",
        "model.layers.0": "cpu",
        "model.layers.1": "disk",
        "model.layers.2": "disk",
        "model.norm": "cpu",
        "lm_head": "disk",
    }
    spread, _ = nl.load_model(path, device_map=device_map, offload_folder=tmp_path_factory.mktemp("offload"))
    assert spread.model.layers[1].mlp.down_proj.weight.device.type == "meta"  # really on disk until used
    return whole, spread, tok


def test_offloaded_model_gives_the_same_numbers(models):
    whole, spread, tok = models
    ids = torch.tensor([tok("the cat sat on the mat")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(spread(ids).logits, whole(ids).logits)
        with nl.apply(whole, PLAN):
            steered = whole(ids).logits
        with nl.apply(spread, PLAN):  # values go where each layer computes, not to the meta device
            torch.testing.assert_close(spread(ids).logits, steered)
        with (
            nl.trace(spread, ["layers.2.act", "layers.1.resid"]) as a,
            nl.trace(whole, ["layers.2.act", "layers.1.resid"]) as b,
        ):
            spread(ids), whole(ids)
    for site in a:
        torch.testing.assert_close(a[site], b[site])

    got = nl.record(spread, tok, TEXTS, progress=False)
    want = nl.record(whole, tok, TEXTS, progress=False)
    assert torch.equal(got.tokens, want.tokens) and torch.equal(got.active, want.active)
    torch.testing.assert_close(got.sum, want.sum)
    got.check_model(whole)  # offloaded weights have no fingerprint: the stats are not refused for that


def test_learned_scalars_train_on_an_offloaded_model(models):
    whole, spread, tok = models
    items = [
        {"prompt": p, "target": t, "foil": f, "group": str(i)}
        for i, (p, t, f) in enumerate([("the cat", "x", "y"), ("one two", "q", "z"), ("a dog", "x", "y")])
    ]
    cfg = nl.ScalingConfig(epochs=2, val_fraction=0.0, components=("ffn_out",), layers=(1, 2))
    got = nl.train_scaling(spread, tok, items, cfg, progress=False)
    want = nl.train_scaling(whole, tok, items, cfg, progress=False)
    for site, value in want.params.items():
        torch.testing.assert_close(got.params[site], value)


def test_bake_refuses_offloaded_weights_with_the_way_out(models):
    _, spread, _ = models
    with pytest.raises(nl.NeuronlabError, match=r"offloaded.*load the model whole"):
        nl.bake(spread, nl.Plan([nl.Scale(factor=2.0, site="act", neurons=[1])]))
