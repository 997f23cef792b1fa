"""Every architecture in the table: sites read exactly what DESIGN.md says, checked against values the test
computes itself (Hugging Face hidden states, the modules' own weights)."""

import pytest
import torch
import torch.nn.functional as F
from transformers.activations import ACT2FN

import neuronlab as nl
from neuronlab.models.sites import KINDS, Site, get_module

from ..conftest import ARCHS, tiny_model

# how each family's FFN turns its input into the down projection's input, written out here, not taken from
# the library: gated FFNs -> (act(gate), up); the others -> act(first projection)
GATED = {
    "llama": lambda mlp, x: (mlp.gate_proj(x), mlp.up_proj(x)),
    "phi3": lambda mlp, x: mlp.gate_up_proj(x).chunk(2, dim=-1),
}
for _a in ("mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo"):
    GATED[_a] = GATED["llama"]
POST_NORM = {"gemma2", "gemma3_text"}  # the FFN output is normalised before it joins the residual stream


def capture_all(model, ids):
    """Every site of every layer, read through neuronlab, plus HF's own hidden states."""
    n = model.config.num_hidden_layers
    got = {}

    def keep(site):
        def fn(h):
            got[site] = h.detach().clone()

        return fn

    sites = [Site(layer, kind) for layer in range(n) for kind in KINDS if kind != "router"]
    with nl.hooked(model, {s: keep(s) for s in sites}):
        out = model(input_ids=ids, output_hidden_states=True)
    return got, out


@pytest.mark.parametrize("arch", ARCHS)
def test_sites_add_up_to_the_residual_stream(arch):
    model = tiny_model(arch)
    ids = torch.randint(4, 100, (2, 7))
    got, out = capture_all(model, ids)
    hs = out.hidden_states
    n = model.config.num_hidden_layers
    for layer in range(n):
        # resid after layer l is HF's hidden state l+1 (the last one has the final norm applied by HF)
        if layer < n - 1:
            torch.testing.assert_close(got[Site(layer, "resid")], hs[layer + 1], rtol=0, atol=0)
        # the residual stream grows by exactly the attention and FFN outputs
        torch.testing.assert_close(
            hs[layer] + got[Site(layer, "attn_out")] + got[Site(layer, "ffn_out")],
            got[Site(layer, "resid")],
            rtol=1e-5,
            atol=1e-5,
        )
    final = get_module(model, nl.arch_spec(model).final_norm)(got[Site(n - 1, "resid")])
    torch.testing.assert_close(final, hs[n], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_neuron_is_the_down_projection_input(arch):
    model = tiny_model(arch)
    spec = nl.arch_spec(model)
    ids = torch.randint(4, 100, (2, 7))
    layer_mod = get_module(model, spec.layers)[1]
    down = get_module(layer_mod, spec.down)
    seen = {}
    h1 = down.register_forward_pre_hook(lambda m, a: seen.__setitem__("down_in", a[0].detach().clone()))
    h2 = down.register_forward_hook(lambda m, a, o: seen.__setitem__("down_out", o.detach().clone()))
    try:
        got, _ = capture_all(model, ids)
    finally:
        h1.remove()
        h2.remove()
    neuron, act, ffn = got[Site(1, "neuron")], got[Site(1, "act")], got[Site(1, "ffn_out")]
    assert neuron.shape[-1] == nl.model_info(model)["d_ff"]
    # (OPT runs its FFN on flattened tokens; neuronlab always shows [batch, pos, width])
    torch.testing.assert_close(neuron, seen["down_in"].view(neuron.shape), rtol=0, atol=0)
    # ffn_out is the down projection's output (through the post-FFN norm where the family has one)
    w, b = down.weight, down.bias
    y = neuron @ w + b if type(down).__name__ == "Conv1D" else F.linear(neuron, w, b)
    if arch in POST_NORM:
        y = layer_mod.post_feedforward_layernorm(y)
    torch.testing.assert_close(ffn, y, rtol=1e-5, atol=1e-5)
    if arch in GATED:
        # act is the activation of the gate; neuron = act * up
        mlp = layer_mod.mlp
        x = {}
        hook = mlp.register_forward_pre_hook(lambda m, a: x.__setitem__("in", a[0]))
        try:
            capture_all(model, ids)
        finally:
            hook.remove()
        gate, up = GATED[arch](mlp, x["in"])
        act_name = getattr(model.config, "hidden_activation", None) or model.config.hidden_act
        torch.testing.assert_close(act, ACT2FN[act_name](gate), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(neuron, act * up, rtol=1e-5, atol=1e-6)
    else:
        torch.testing.assert_close(neuron, act, rtol=0, atol=0)  # un-gated: the neuron is the activation


def test_a_model_whose_sites_cannot_be_found_says_how_to_pass_an_archspec():
    model = tiny_model("llama")
    model.config.model_type = "mystery"
    model.model.layers[0].mlp.down_proj = torch.nn.Identity()  # no projection from d_ff back to d_model
    with pytest.raises(nl.NeuronlabError, match=r"(?s)'mystery' is not in the table.*down projection.*nl.ArchSpec"):
        nl.arch_spec(model)
    model = tiny_model("llama")
    model.config.model_type = "mystery"
    nl.set_arch(model, nl.ARCH_SPECS["llama"])  # the model carries it from here on
    got = {}
    with nl.hooked(model, {Site(0, "act"): lambda h: got.setdefault("h", h)}):
        model(input_ids=torch.tensor([[5, 6, 7]]))
    assert got["h"].shape == (1, 3, 64)


def test_bad_sites_fail_clearly():
    model = tiny_model("gpt2")
    with pytest.raises(nl.NeuronlabError, match="unknown site kind"):
        Site(0, "mlp")
    with pytest.raises(nl.NeuronlabError, match="layer 9 is out of range"):
        with nl.hooked(model, {Site(9, "act"): lambda h: None}):
            pass
    with pytest.raises(nl.NeuronlabError, match=r"layers\.<index>\.<kind>"):
        Site.parse("3.act")
    assert Site.parse("layers.2.ffn_out") == Site(2, "ffn_out") and str(Site(2, "act")) == "layers.2.act"
    bad = nl.ArchSpec(
        layers="transformer.h",
        act="mlp.nope",
        down="mlp.c_proj",
        ffn_out="mlp",
        attn_out="attn",
        final_norm="transformer.ln_f",
        unembed="lm_head",
    )
    nl.set_arch(model, bad)  # a spec set by hand wins over the table row
    with pytest.raises(nl.NeuronlabError, match="does not resolve"):
        with nl.hooked(model, {Site(0, "act"): lambda h: None}):
            pass


def test_hooks_are_removed_after_an_exception():
    model = tiny_model("llama")
    ids = torch.tensor([[5, 6, 7]])

    def boom(h):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError), nl.hooked(model, {Site(0, "act"): boom}):
        model(input_ids=ids)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("arch", ["llama", "opt", "gpt2"])
def test_trace_captures_and_stops_after_the_last_site(arch):
    from neuronlab.models.sites import trace

    model = tiny_model(arch)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
    reached = []
    head = nl.models.sites.get_module(model, nl.arch_spec(model).final_norm)
    handle = head.register_forward_hook(lambda *a: reached.append(True))
    try:
        with torch.no_grad(), trace(model, [Site(1, "resid"), Site(0, "act")], stop=True) as tr:
            model(input_ids=ids)
    finally:
        handle.remove()
    assert not reached  # the forward pass stopped after layer 1: the final norm never ran
    assert torch.equal(tr[Site(1, "resid")], hidden[2]) and tr[Site(0, "act")].shape == (
        1,
        4,
        nl.models.sites.site_width(model, "act"),
    )
    assert tr.missing() == []
    with torch.no_grad(), trace(model, ["layers.2.ffn_out"], reduce=lambda s, h: h.sum()) as tr:
        model(input_ids=ids)
    assert tr[Site(2, "ffn_out")].dim() == 0
