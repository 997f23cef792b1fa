"""Model identity: a fine-tuned or baked model is told from its base, a dtype cast is not, and errors say where."""

import pytest
import torch

import neuronlab as nl
from neuronlab.models.load import require_same_model, same_model

from ..conftest import ARCHS, tiny_model


@pytest.mark.parametrize("arch", ARCHS)
def test_fine_tune_and_bake_differ_a_dtype_cast_does_not(arch):
    base = tiny_model(arch)
    info = nl.model_info(base)
    assert same_model(info, nl.model_info(tiny_model(arch).to(torch.bfloat16))) is None
    tuned = tiny_model(arch)
    spec = nl.arch_spec(tuned)
    down = nl.models.sites.get_module(nl.models.sites.decoder_layers(tuned)[1], spec.down)
    with torch.no_grad():  # a fine-tune of one FFN projection by 5% of its norm: the embeddings stay the same
        down.weight.add_(torch.randn_like(down.weight) * 0.05 * down.weight.std())
    assert nl.model_info(tuned)["probe"] == info["probe"]
    assert same_model(info, nl.model_info(tuned)) == same_model(info, nl.model_info(tuned))
    assert "ffn weights of layer 1 differ" in same_model(info, nl.model_info(tuned))
    baked = nl.bake(base, nl.Plan([nl.Scale(factor=2.0, neurons=[3, 5], layers=[2])]))
    assert "ffn weights of layer 2 differ" in same_model(info, nl.model_info(baked))


def test_artifacts_of_the_base_are_refused_on_a_fine_tune(tok):
    from ..conftest import TEXTS

    base = tiny_model("llama")
    stats = nl.record(base, tok, TEXTS, progress=False)
    tuned = tiny_model("llama")
    with torch.no_grad():
        tuned.model.layers[0].self_attn.o_proj.weight.mul_(1.05)
    with pytest.raises(nl.NeuronlabError, match="attention and norms weights of layer 0 differ"):
        stats.check_model(tuned)
    require_same_model(stats.meta["model"], base, "these stats")
    old = {k: v for k, v in stats.meta["model"].items() if k != "fingerprint"}  # saved before fingerprints
    require_same_model(old, tuned, "old stats")
