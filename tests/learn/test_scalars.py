"""Learned interventions on tiny random models: identity, equivalence with the core's apply, gradients, formulas."""

import math

import numpy as np
import pytest
import torch

import neuronlab as nl
from neuronlab.learn.contrast_items import base_logits, encode
from neuronlab.learn.methods import METHODS, LearnedIntervention
from neuronlab.learn.scalars import (
    ScalingConfig,
    evaluate_scaling,
    init_scaling,
    logit_diff,
    objective,
    rest_kl,
    train_scaling,
)

from ..conftest import tiny_model

ITEMS = [
    {"prompt": "the cat", "target": "x", "foil": "y", "group": "a"},
    {"prompt": "one two", "target": "q", "foil": "z", "group": "b"},
    {"prompt": "hello", "target": "e", "foil": "o", "group": "c"},
    {"prompt": "a much longer prompt", "target": "s", "foil": "t", "group": "d"},
]
PROMPTS = ["hi", "the cat sat", "a much longer prompt than the rest"]


def _logits(model, tok, text):
    with torch.no_grad():
        return model(**tok(text, return_tensors="pt")).logits


def _randomize(s: LearnedIntervention, seed: int = 0) -> LearnedIntervention:
    g = torch.Generator().manual_seed(seed)
    for p in s.params.values():
        with torch.no_grad():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return s


@pytest.mark.parametrize("method", METHODS)
def test_identity_leaves_logits_unchanged(arch_model, tok, method):
    _, model = arch_model
    s = init_scaling(model, ScalingConfig(method=method), positions=5)
    assert len(s.params) == 3 * len(nl.models.sites.decoder_layers(model))
    for text in PROMPTS:
        base = _logits(model, tok, text)
        with torch.no_grad(), nl.apply(model, s.to_plan(detach=False)):  # the training path
            assert torch.equal(model(**tok(text, return_tensors="pt")).logits, base)
        with nl.apply(model, s.to_plan()):
            assert torch.equal(_logits(model, tok, text), base)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "opt", "gemma2"])
@pytest.mark.parametrize("method", METHODS)
def test_the_training_path_is_the_plan_path(arch, method, tok):
    """Training runs through `nl.apply` on undetached plan entries: with gradients on, the logits equal the saved
    plan's, and the gradient reaches every parameter."""
    model = tiny_model(arch)
    s = _randomize(init_scaling(model, ScalingConfig(method=method, components=("attn_out", "ffn_out", "resid")), 6))
    for text in PROMPTS:  # shorter and longer than the 6 positions
        with nl.apply(model, s.to_plan(detach=False)):
            trained = model(**tok(text, return_tensors="pt")).logits
        with nl.apply(model, s.to_plan()):
            planned = _logits(model, tok, text)
        assert torch.allclose(trained.detach(), planned, atol=1e-6)
        assert not torch.allclose(planned, _logits(model, tok, text), atol=1e-3)
    trained[0, -1].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in s.params.values())


def test_steervec_adds_per_position_vectors_by_hand(tok):
    model = tiny_model("gpt2")
    s = _randomize(init_scaling(model, ScalingConfig(method="steervec", components=("resid",), layers=(1,)), 2))
    v = s.params["layers.1.resid"].detach().numpy().astype(np.float64)  # row 0: last token

    def by_hand(h):
        x = h.detach().numpy().astype(np.float64).copy()
        x[:, -1] += v[0]
        x[:, -2] += v[1]
        return torch.from_numpy(x).to(h.dtype)

    text = "the cat sat"
    with torch.no_grad(), nl.hooked(model, {nl.Site(1, "resid"): by_hand}):
        expected = model(**tok(text, return_tensors="pt")).logits
    with nl.apply(model, s.to_plan()):
        assert torch.allclose(_logits(model, tok, text), expected, atol=1e-5)


def test_activscalar_scales_positions_counted_from_the_end(tok):
    model = tiny_model("llama")
    s = init_scaling(model, ScalingConfig(components=("ffn_out",), layers=(1,)), positions=3)
    with torch.no_grad():
        s.params["layers.1.ffn_out"][:] = torch.tensor([-2.0, 1.0, 0.5])  # last token, second, third from the end

    def by_hand(h):
        h = h.clone()
        h[:, -1] *= -2.0
        h[:, -3] *= 0.5
        return h

    text = "the cat sat"
    with torch.no_grad(), nl.hooked(model, {nl.Site(1, "ffn_out"): by_hand}):
        expected = model(**tok(text, return_tensors="pt")).logits
    with nl.apply(model, s.to_plan()):
        assert torch.allclose(_logits(model, tok, text), expected, atol=1e-6)


def test_dynscalar_alpha_by_hand(tok):
    model = tiny_model("llama")
    s = _randomize(init_scaling(model, ScalingConfig(method="dynscalar", components=("attn_out",), layers=(0,)), 1))
    wb = s.params["layers.0.attn_out"].detach().numpy().astype(np.float64)

    def by_hand(h):
        x = h.detach().numpy().astype(np.float64)
        alpha = wb[-1] + (x @ wb[:-1]) / np.linalg.norm(x, axis=-1)
        return torch.from_numpy(x * alpha[..., None]).to(h.dtype)

    text = "hello there"
    with torch.no_grad(), nl.hooked(model, {nl.Site(0, "attn_out"): by_hand}):
        expected = model(**tok(text, return_tensors="pt")).logits
    with nl.apply(model, s.to_plan()):
        assert torch.allclose(_logits(model, tok, text), expected, atol=1e-5)


def test_loss_terms_by_hand():
    rng = np.random.default_rng(0)
    z0, z = rng.normal(size=(3, 7)), rng.normal(size=(3, 7))
    target, foil = np.array([1, 4, 0]), np.array([2, 0, 6])
    kl = []
    for r in range(3):
        keep = [j for j in range(7) if j not in (target[r], foil[r])]
        p0 = np.exp(z0[r, keep]) / np.exp(z0[r, keep]).sum()
        p = np.exp(z[r, keep]) / np.exp(z[r, keep]).sum()
        kl.append(float((p0 * np.log(p0 / p)).sum()))
    got = rest_kl(torch.tensor(z0), torch.tensor(z), torch.tensor(target), torch.tensor(foil))
    assert np.allclose(got.numpy(), kl, atol=1e-12)
    ld = logit_diff(torch.tensor(z), torch.tensor(target), torch.tensor(foil))
    assert np.allclose(ld.numpy(), z[[0, 1, 2], target] - z[[0, 1, 2], foil])
    assert (
        float(rest_kl(torch.tensor(z0), torch.tensor(z0), torch.tensor(target), torch.tensor(foil)).abs().max()) < 1e-12
    )


@pytest.mark.parametrize("method", METHODS)
def test_gradient_check(method, tok):
    # GPT-2 runs in float64 end to end (Llama's RMSNorm computes in float32, too coarse for finite differences)
    model = tiny_model("gpt2").double()
    cfg = ScalingConfig(method=method, components=("attn_out", "resid"), layers=(1, 2), positions=3)
    s = _randomize(init_scaling(model, cfg, 3))
    keys = list(s.params)
    enc = encode(tok, ITEMS[:2])
    z0 = base_logits(model, enc, 8)
    params = tuple(s.params[k].detach().double().requires_grad_(True) for k in keys)

    def loss(*ps):
        return objective(model, LearnedIntervention(method, dict(zip(keys, ps, strict=True))), enc, z0, [0, 1], cfg)[
            "loss"
        ]

    assert torch.autograd.gradcheck(loss, params, eps=1e-6, atol=1e-6)


def test_save_load_and_another_model(tmp_path, tok):
    model = tiny_model("llama")
    s = _randomize(init_scaling(model, ScalingConfig(method="dynscalar"), 4))
    s.save(tmp_path / "s.safetensors")
    back = LearnedIntervention.load(tmp_path / "s.safetensors")
    assert back.method == "dynscalar" and back.meta["positions"] == 4
    assert all(torch.equal(back.params[k], s.params[k].detach()) for k in s.params)
    s.to_plan().save(tmp_path / "plan.json")
    with nl.apply(model, nl.Plan.load(tmp_path / "plan.json")):
        from_file = _logits(model, tok, "the cat")
    with nl.apply(model, back.to_plan()):
        assert torch.equal(_logits(model, tok, "the cat"), from_file)
    with pytest.raises(nl.NeuronlabError, match="made on another model"):
        evaluate_scaling(tiny_model("llama", seed=1), tok, back, ITEMS)
    with pytest.raises(nl.NeuronlabError, match="not a neuronlab learned intervention"):
        nl.Stats.empty(["a"], 1, 2, {}).save(tmp_path / "stats.safetensors")
        LearnedIntervention.load(tmp_path / "stats.safetensors")


def test_bad_config_and_items(tok):
    with pytest.raises(nl.NeuronlabError, match="unknown learned-intervention method 'lora'"):
        ScalingConfig(method="lora")
    with pytest.raises(nl.NeuronlabError, match="components must be"):
        ScalingConfig(components=("act",))
    model = tiny_model("llama")
    with pytest.raises(nl.NeuronlabError, match="layer 7 is out of range"):
        init_scaling(model, ScalingConfig(layers=(7,)), 2)
    with pytest.raises(nl.NeuronlabError, match="start with the same token"):
        train_scaling(model, tok, [{"prompt": "ab", "target": "xa", "foil": "xb"}], progress=False)


def test_fit_task_reads_a_task_file_drops_ambiguous_items_and_writes_the_run(tmp_path, tok):
    from neuronlab.data.contrast import write_contrast
    from neuronlab.learn.runs import RUN_FILES, fit_task

    model = tiny_model("llama")
    ambiguous = {"prompt": "ab", "target": "xa", "foil": "xb", "group": "z"}
    write_contrast(tmp_path / "task.jsonl", [*ITEMS, ambiguous])
    with pytest.raises(nl.NeuronlabError, match="start with the same token"):
        fit_task(model, tok, tmp_path / "task.jsonl", epochs=2, progress=False)
    learned, metrics = fit_task(
        model, tok, tmp_path / "task.jsonl", epochs=2, progress=False, out=tmp_path / "run", drop_ambiguous=True
    )
    assert metrics["dropped"] == 1 and metrics["epochs"] == 2 and learned.meta["task"] == str(tmp_path / "task.jsonl")
    assert metrics["train"]["items"] + metrics["held_out"]["items"] == len(ITEMS)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted([*RUN_FILES, "plan.safetensors"])
    assert (
        LearnedIntervention.load(tmp_path / "run" / RUN_FILES[0]).meta["held_out_groups"]
        == (learned.meta["held_out_groups"])
    )


def test_training_keeps_the_best_validation_parameters(tok):
    model = tiny_model("llama")
    items = [
        {"prompt": p, "target": t, "foil": f, "group": str(i)}
        for i, (p, t, f) in enumerate(
            [
                ("the cat", "x", "y"),
                ("one two", "q", "z"),
                ("hello", "e", "o"),
                ("a dog", "x", "y"),
                ("the sun", "q", "z"),
                ("blue", "e", "o"),
            ]
        )
    ]
    cfg = ScalingConfig(epochs=15, patience=3, val_fraction=0.34, lr=0.1)
    s = train_scaling(model, tok, items, cfg, progress=False)
    history = s.meta["history"]
    assert (
        1 <= len(history) <= 15 and s.meta["val_groups"] and not set(s.meta["val_groups"]) & set(s.meta["train_groups"])
    )
    best = min(h["val_loss"] for h in history)
    assert math.isclose(s.meta["best_val_loss"], best, rel_tol=1e-6, abs_tol=1e-6)
    val = [i for i in items if i["group"] in s.meta["val_groups"]]
    enc = encode(tok, val)
    z0 = base_logits(model, enc, 8)
    with torch.no_grad():  # one item at a time: prompts differ in length
        got = sum(float(objective(model, s, enc, z0, [i], cfg)["loss"]) for i in range(len(val))) / len(val)
    assert math.isclose(got, best, rel_tol=1e-4, abs_tol=1e-5)
    assert all(p.requires_grad for p in model.parameters())  # the model's own flags are restored


@pytest.mark.parametrize("method", METHODS)
def test_grids_summary_and_heatmap(method):
    from neuronlab.report.plots import panels

    model = tiny_model("llama")
    s = _randomize(init_scaling(model, ScalingConfig(method=method, components=("attn_out", "resid")), 4))
    grids, cols, rows, center = s.grids()
    assert rows == ["0", "1", "2"]
    if method == "dynscalar":
        assert list(grids) == ["dynscalar (b, |w|)"] and cols == ["attn_out b", "attn_out |w|", "resid b", "resid |w|"]
        p = s.params["layers.1.resid"].detach()
        assert grids["dynscalar (b, |w|)"][1][2:] == pytest.approx([float(p[-1]), float(p[:-1].norm())])
    else:
        assert list(grids) == ["attn_out", "resid"] and cols == ["-4", "-3", "-2", "-1"]
        p = s.params["layers.2.attn_out"].detach()
        last = float(p[0]) if method == "activscalar" else float(p[0].norm())
        assert grids["attn_out"][2][-1] == pytest.approx(last)  # column -1 is the last token
    assert center == (1.0 if method == "activscalar" else None)
    assert panels(grids, cols, rows, "t", center)[:4] == b"\x89PNG"
    text = s.summary(top=3)
    assert text.startswith(f"{method} on ") and len(text.splitlines()) == 4
