"""SLAM layer selection: MSD by hand with numpy, planted layers recovered, baselines, artifact, errors."""

import numpy as np
import pytest
import torch

import neuronlab as nl
from neuronlab.select.layers import LayerSelection, parse_layers

from ..conftest import TEXTS, tiny_model


def _planted(n_layers=8, width=20, seed=0):
    """Stats of three languages whose activated-neuron counts differ most in layers 2 and 5."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.0, 0.45, size=(3, n_layers, width))  # below the 0.5 threshold: nothing activated
    p[:, :, :4] = 0.9  # four neurons every language activates, in every layer
    p[0, 2, 4:16], p[1, 2, 4:6] = 0.8, 0.8  # layer 2: 16 vs 6 vs 4 activated
    p[2, 5, 4:14] = 0.7  # layer 5: 4 vs 4 vs 14
    p[1, 6, 4:6], p[2, 6, 4:5] = 0.6, 0.6  # layer 6: a small spread (6, 5, 4)
    tokens = 1000
    stats = nl.Stats.empty(["en", "fr", "zh"], n_layers, width, {"site": "act", "model": {"name_or_path": "x"}})
    stats.tokens[:] = tokens
    stats.active[:] = torch.from_numpy(np.round(p * tokens)).long()
    return stats


def test_msd_equals_numpy_and_recovers_the_planted_layers():
    stats = _planted()
    sel = nl.select_layers(stats, k=2)
    counts = (stats.probability.numpy() > 0.5).sum(-1).astype(float)  # [langs, layers]
    msd = ((counts - counts.mean(0)) ** 2).mean(0)
    assert np.allclose(sel.scores, msd) and sel.layers == [2, 5]
    assert nl.select_layers(stats, k=3).layers == [2, 5, 6]
    assert sel.per_language["fr"][2] == 6 and sel.per_language["zh"][5] == 14


def test_overlap_with_the_reference_by_hand():
    stats = _planted()
    sel = nl.select_layers(stats, k=1, method="overlap", reference="en")
    a = stats.probability.numpy() > 0.5
    x = np.array(
        [[(a[i, layer] & a[0, layer]).sum() / max(a[i, layer].sum(), 1) for layer in range(8)] for i in (1, 2)]
    )
    assert np.allclose(sel.scores, ((x - x.mean(0)) ** 2).mean(0)) and list(sel.per_language) == ["fr", "zh"]
    assert sel.layers == [int(np.argmax(((x - x.mean(0)) ** 2).mean(0)))]


def test_baselines_and_the_artifact(tmp_path):
    stats = _planted()
    assert nl.select_layers(stats, k=3, method="lowest").layers == [0, 1, 2]
    rand = nl.select_layers(stats, k=3, method="random", seed=4)
    assert rand.layers == nl.select_layers(stats, k=3, method="random", seed=4).layers and len(rand.layers) == 3
    assert nl.select_layers(stats, method="all", k=1).layers == list(range(8))
    sel = nl.select_layers(stats, k=2)
    sel.save(tmp_path / "layers.json")
    back = LayerSelection.load(tmp_path / "layers.json")
    assert back.layers == [2, 5] and np.allclose(back.scores, sel.scores) and back.meta["k"] == 2
    assert parse_layers(tmp_path / "layers.json")[0] == [2, 5]
    assert parse_layers("0-2,5", 8)[0] == [0, 1, 2, 5]
    from neuronlab.artifacts import describe
    from neuronlab.report.plots import layer_scores

    assert "layers [2, 5]" in describe(tmp_path / "layers.json")
    assert layer_scores(sel)[:4] == b"\x89PNG"


def test_bad_input_is_named(tok):
    stats = _planted()
    with pytest.raises(nl.NeuronlabError, match="k must be between 1 and the model's 8 layers"):
        nl.select_layers(stats, k=9)
    with pytest.raises(nl.NeuronlabError, match=r"LayerConfig.method must be one of msd, overlap, .*not 'best'"):
        nl.select_layers(stats, method="best")
    with pytest.raises(nl.NeuronlabError, match="group 'de' is not in these stats"):
        nl.select_layers(stats, method="overlap", reference="de")
    with pytest.raises(nl.NeuronlabError, match="out of range"):
        parse_layers("0-9", 8)
    with pytest.raises(nl.NeuronlabError, match="cannot read layers"):
        parse_layers("first six", 8)
    model = tiny_model("llama")
    resid = nl.record(model, tok, TEXTS, site="resid", progress=False)
    with pytest.raises(nl.NeuronlabError, match="site act, not resid"):
        nl.select_layers(resid, k=1)
    real = nl.select_layers(nl.record(model, tok, TEXTS, progress=False), k=2)
    real.check_model(model)
    with pytest.raises(nl.NeuronlabError, match="made on another model"):
        real.check_model(tiny_model("llama", seed=1))
