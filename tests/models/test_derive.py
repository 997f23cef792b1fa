"""Derived ArchSpecs: found in the module tree, proven on a probe forward, refused where the identities fail."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import transformers

import neuronlab as nl
from neuronlab.analyze.lens import decode
from neuronlab.models.derive import derive_spec
from neuronlab.models.sites import Site, decoder_layers, get_module, site_module
from neuronlab.models.verify import spec_code, verify_spec
from neuronlab.testing import tiny_causal_lm

from ..conftest import ARCHS, tiny_model

# The families the seeds' papers use, and more that users bring; (block level): a mixture of experts.
MUST_SERVE = [
    "gptj",
    "gpt_neo",
    "llama",
    "gemma",
    "gemma2",
    "gemma3_text",
    "qwen2",
    "qwen3",
    "gpt_neox",
    "bloom",
    "gpt2",
    "mistral",
    "falcon",
    "olmo2",
    "cohere",
    "stablelm",
    "starcoder2",
    "smollm3",
    "phi3",
]
MUST_SERVE_BLOCKS = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3", "gpt_oss")
# Layers that are not h + attn + ffn (post-norm, scaled, parallel mixers) and hybrids, served at the neuron level.
MUST_SERVE_NEURONS = ("openai-gpt", "bert", "roberta", "falcon_h1", "bamba", "lfm2", "recurrent_gemma", "minicpm3")
MUST_SERVE_EXPERTS = ("jamba", "qwen3_next", "granitemoehybrid", "lfm2_moe", "minimax")  # hybrid mixtures of experts


def _same(table: nl.ArchSpec, derived: nl.ArchSpec) -> list[str]:
    """Fields where the derived spec differs from the table row (`a|b` alternatives and the max-positions name,
    which the configs alias, aside)."""
    out = []
    for f in dataclasses.fields(table):
        a, b = getattr(table, f.name), getattr(derived, f.name)
        if a != b and not (isinstance(a, str) and b in a.split("|")) and f.name != "max_positions":
            out.append(f"{f.name}: {a!r} vs {b!r}")
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_every_table_row_is_proven_and_derived_back(arch):
    model = tiny_model(arch)
    assert verify_spec(model, nl.ARCH_SPECS[arch]) == []
    assert _same(nl.ARCH_SPECS[arch], derive_spec(model)) == []


def test_a_family_outside_the_table_is_served_with_hugging_face_numerics():
    model = tiny_causal_lm("gptj")
    assert "gptj" not in nl.ARCH_SPECS
    spec = nl.arch_spec(model)
    assert nl.arch_spec(model) is spec  # derived and proven once per model
    assert (spec.layers, spec.down, spec.act, spec.ffn_out, spec.attn_out) == (
        "transformer.h",
        "mlp.fc_out",
        "mlp.act",
        "mlp",
        "attn",
    )
    ids = torch.tensor([[3, 9, 4, 17, 5]])
    with torch.no_grad():
        plain = model(ids).logits
        with nl.apply(model, nl.Plan([])):
            assert torch.equal(model(ids).logits, plain)
        with nl.trace(model, ["layers.1.neuron", "layers.1.ffn_out"]) as tr:
            model(ids)
    fc_out = model.transformer.h[1].mlp.fc_out
    assert torch.allclose(fc_out(tr[Site(1, "neuron")]), tr[Site(1, "ffn_out")], atol=1e-6)
    stats = nl.record(model, nl.testing.char_tokenizer(), {"x": ["abc de", "fg"]}, site="act", progress=False)
    assert stats.active.shape == (1, 2, 64)


def test_wrong_sites_are_named_by_the_identity_they_break():
    model = tiny_model("llama")
    row = nl.ARCH_SPECS["llama"]
    bad = verify_spec(model, dataclasses.replace(row, attn_out="post_attention_layernorm"))
    assert "hidden_states[0] + attn_out(0) + ffn_out(0) is not resid(0)" in bad
    bad = verify_spec(model, dataclasses.replace(row, final_norm="model.layers.0.input_layernorm"))
    assert any("logit lens" in b for b in bad)
    gpt2 = tiny_causal_lm("gpt2", spread=0.3)  # the attention's projection named as an FFN's down projection
    bad = verify_spec(
        gpt2,
        dataclasses.replace(nl.ARCH_SPECS["gpt2"], down="attn.c_proj", ffn_out="attn.c_proj", attn_out=None, act=None),
    )
    assert "with the output of 'mlp.c_fc' at zero, neuron(0) still depends on the token" in bad[0]
    bloom = tiny_model("bloom")  # BloomMLP adds the residual itself: its output is not the FFN's contribution
    bad = verify_spec(bloom, dataclasses.replace(nl.ARCH_SPECS["bloom"], ffn_out="mlp"))
    assert any("is not resid" in b for b in bad)


def _tiny(model_type: str, **kw):
    """tiny_causal_lm, skipped where the installed transformers does not have the type (the floor leg)."""
    from transformers import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        pytest.skip(f"{model_type} is not in transformers {transformers.__version__}")
    return tiny_causal_lm(model_type, **kw)


def _granite(multiplier: float):
    config = transformers.GraniteConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=128,
        residual_multiplier=multiplier,
        logits_scaling=8.0,  # real Granite checkpoints divide their logits (8 to 16)
    )
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def _column_zeroed(model, layer: int, j: int):
    """A copy of `model` whose layer's down projection has neuron j's column (GPT-1's Conv1D: row) at zero."""
    import copy

    spec = nl.arch_spec(model)
    other = copy.deepcopy(model)
    w = get_module(decoder_layers(other)[layer], spec.down).weight
    with torch.no_grad():
        (w[j] if spec.conv1d else w[:, j]).zero_()
    return other


@pytest.mark.parametrize("name", ["granite x0.5", "openai-gpt", "bert", "falcon_h1", "olmo_hybrid"])
def test_layers_that_are_not_h_attn_ffn_serve_their_ffn_neurons(name):
    """A scaled residual (Granite), post-norm layers (GPT-1, BERT), parallel attention and mamba (Falcon-H1),
    Olmo-hybrid: no attention output adds up to the next state, but the FFN's neurons and down projection are served,
    proven against the model's own forward with a down column removed."""
    model = _granite(0.5) if name == "granite x0.5" else _tiny(name, spread=0.3)
    spec = nl.arch_spec(model)
    assert spec.attn_out is None and spec.ffn_out == spec.down and verify_spec(model, spec) == []
    assert spec.lens and spec.logit_divisor == ("logits_scaling" if name == "granite x0.5" else None)
    with pytest.raises(nl.NeuronlabError, match=r"not served on this model: its layers are not h \+ attn \+ ffn"):
        with nl.trace(model, ["layers.0.attn_out"]):
            pass
    with pytest.raises(nl.NeuronlabError, match="decode resid"):
        nl.logit_lens(model, nl.testing.char_tokenizer(), ["abc"], site="ffn_out")
    ids = torch.tensor([[3, 9, 4, 17, 5, 8]])
    with torch.no_grad():
        with nl.hooked(model, {Site(1, "neuron"): lambda h: h.index_fill(-1, torch.tensor([5]), 0.0)}):
            hooked = model(ids).logits
        edited = _column_zeroed(model, 1, 5)(ids).logits
        assert (hooked - model(ids).logits).abs().max() > 1e-6  # the neuron matters
    torch.testing.assert_close(hooked, edited, atol=1e-5, rtol=1e-4)
    stats = nl.record(model, nl.testing.char_tokenizer(), {"x": ["abc de"]}, site="neuron", progress=False)
    assert stats.tokens.tolist() == [6]


@pytest.mark.parametrize("model_type", ["bamba", "qwen3_5_text", "recurrent_gemma", "lfm2_moe", "jamba"])
def test_hybrid_layers_serve_each_token_mixer_as_attn_out(model_type):
    """Hybrids whose layers mix tokens by attention in some layers and by mamba, linear attention, a recurrence or a
    convolution in others: attn_out is each layer's mixer, and h + mixer + ffn is Hugging Face's next hidden state."""
    model = _tiny(model_type, spread=0.3)
    spec = nl.arch_spec(model)
    assert spec.attn_out is not None and verify_spec(model, spec) == []
    n = len(decoder_layers(model))
    ids = torch.tensor([[3, 9, 4, 17, 5, 8]])
    sites = [Site(i, k) for i in range(n) for k in ("attn_out", "ffn_out")]
    with nl.trace(model, sites) as tr, torch.no_grad():
        hs = model(ids, output_hidden_states=True).hidden_states
    mixers = {type(site_module(model, Site(i, "attn_out"))[0]).__name__ for i in range(n)}
    assert len(mixers) == 2 or "|" not in spec.attn_out  # recurrent_gemma: one `temporal_block`, two classes
    for i in range(n - 1):  # the last hidden state is after the final norm
        torch.testing.assert_close(hs[i] + tr[Site(i, "attn_out")] + tr[Site(i, "ffn_out")], hs[i + 1])


def test_a_head_that_is_not_a_lens_serves_the_sites_and_refuses_the_lens():
    """MiniCPM3 scales the last hidden state before its head: decoding a layer's output through the final norm and
    unembedding alone would not be the model's reading."""
    model = _tiny("minicpm3")
    spec = nl.arch_spec(model)
    assert not spec.lens and spec.down == "mlp.down_proj" and verify_spec(model, spec) == []
    with pytest.raises(nl.NeuronlabError, match="logit lens is not served"):
        nl.logit_lens(model, nl.testing.char_tokenizer(), ["abc"])
    bert = tiny_causal_lm("bert", spread=0.3)  # BERT's head transform (dense, gelu, norm) is the lens's final norm
    assert nl.arch_spec(bert).final_norm == "cls.predictions.transform"
    ids = torch.tensor([[3, 9, 4, 17]])
    with nl.trace(bert, ["layers.1.resid"]) as tr, torch.no_grad():
        logits = bert(ids).logits
    torch.testing.assert_close(decode(bert, tr[Site(1, "resid")]), logits)


def test_mixture_of_experts_serves_blocks_and_refuses_neurons():
    model = tiny_causal_lm("mixtral")
    spec = nl.arch_spec(model)
    assert (spec.down, spec.attn_out) == (None, "self_attn") and spec.ffn_out in ("mlp", "block_sparse_moe")  # 5.x, 4.x
    tok = nl.testing.char_tokenizer()
    stats = nl.record(model, tok, {"x": ["abc de", "fg"]}, site="ffn_out", progress=False)
    assert stats.active.shape == (1, 2, 32) and int(stats.tokens[0]) == 8  # BOS not counted
    with pytest.raises(nl.NeuronlabError, match="mixture of experts"):
        nl.record(model, tok, {"x": ["abc"]}, site="act", progress=False)


def test_spec_code_is_python_that_builds_the_same_spec():
    spec = nl.ARCH_SPECS["gpt2"]
    assert eval(spec_code(spec), {"nl": nl}) == spec


@pytest.mark.slow
def test_walk_every_causal_lm_type_in_transformers():
    """Every `model_type` with a `*ForCausalLM` in the installed transformers, built tiny from its config: served
    (sites proven), refused with a clear error, or failed (an error that is not ours); the mixtures of experts also
    by their expert neurons (`check_experts`: the model's own logits through neuronlab's loop, a zeroed neuron equal
    to its down column removed). Measured on transformers 5.25: of 200 types, 151 build tiny; 89 served with dense
    neuron sites, 51 served at the block level (mixtures of experts), 49 of those with expert neurons (jetmoe and
    ergo refused by name): 138 at the neuron level. In 46 of the 49 the block's output is its experts' plus its
    shared expert's (axk1, inkling_text and minimax_m3_vl_text do more). 11 refused (no FFN, FFN blocks in some
    layers only, layers whose output is not the hidden state), 0 failed. The other 49 have sub-configs of their own
    (vision, audio, encoder-decoder) or need settings the generic tiny config lacks."""
    import warnings

    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    result: dict[str, list[str]] = {
        "served": [],
        "served (block level)": [],
        "expert neurons": [],
        "block is not experts + shared": [],
        "refused": [],
        "failed": [],
        "not built": [],
    }
    for model_type in sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = tiny_causal_lm(model_type)
                with torch.no_grad():
                    model(torch.tensor([[3, 5, 6, 7]]))
        except Exception:
            result["not built"].append(model_type)
            continue
        try:
            spec = nl.arch_spec(model)
        except nl.NeuronlabError:
            result["refused"].append(model_type)
            continue
        except Exception as err:
            result["failed"].append(f"{model_type}: {type(err).__name__}: {err}")
            continue
        assert verify_spec(model, spec) == [], model_type  # table rows too: nothing served that fails an identity
        result["served" if spec.down else "served (block level)"].append(model_type)
        if not spec.down:  # a mixture of experts: its expert neurons, proven on the probe, or refused by name
            try:
                layouts = nl.check_experts(model)
                result["expert neurons"].append(model_type)
                if next(iter(layouts.values())).adds_up is False:  # the block does more than experts + shared
                    result["block is not experts + shared"].append(model_type)
            except nl.NeuronlabError:
                pass
            except Exception as err:
                result["failed"].append(f"{model_type} (expert neurons): {type(err).__name__}: {err}")
    print({k: len(v) for k, v in result.items()})
    print("expert neurons:", ", ".join(result["expert neurons"]))
    print("refused:", ", ".join(result["refused"]))
    assert result["failed"] == []
    built = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES) - set(result["not built"])
    assert {m for m in MUST_SERVE + list(MUST_SERVE_NEURONS) if m in built} <= set(result["served"])
    assert {m for m in MUST_SERVE_BLOCKS if m in built} <= set(result["served (block level)"])
    if int(transformers.__version__.split(".")[0]) >= 5:  # fused experts
        assert {m for m in MUST_SERVE_BLOCKS + MUST_SERVE_EXPERTS if m in built} <= set(result["expert neurons"])
        assert len(result["served"]) + len(result["expert neurons"]) >= 120


def test_inspect_model_prints_the_spec_and_its_proof(tmp_path):
    import transformers
    from typer.testing import CliRunner

    from neuronlab.cli import app

    tok = nl.testing.char_tokenizer()
    tiny_causal_lm("gptj").save_pretrained(tmp_path / "gptj")
    tok.save_pretrained(tmp_path / "gptj")
    result = CliRunner().invoke(app, ["inspect-model", "-m", str(tmp_path / "gptj")])
    assert result.exit_code == 0, result.output
    assert "gptj: derived from the module tree" in result.output and "proven on a probe forward" in result.output
    code = result.output.split("spec = ", 1)[1].splitlines()[0]
    assert eval(code, {"nl": nl}) == derive_spec(tiny_causal_lm("gptj"))
    config = transformers.GraniteConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=128,
        residual_multiplier=0.5,
    )
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "granite")
    tok.save_pretrained(tmp_path / "granite")
    result = CliRunner().invoke(app, ["inspect-model", "-m", str(tmp_path / "granite")])
    assert result.exit_code == 0 and "not served: attn_out: the layer is not h + attn + ffn" in result.output


def test_gemma3_multimodal_checkpoints_serve_their_language_model():
    """Gemma 3 4B-27B are Gemma3ForConditionalGeneration (a vision tower beside the language model)."""
    from transformers import AutoModelForCausalLM, Gemma3Config

    text = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        vocab_size=300,
        sliding_window=16,
    )
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(
        Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4)
    ).eval()
    spec = nl.arch_spec(model)
    assert spec.layers.endswith("language_model.layers") or spec.layers.endswith("language_model.model.layers")
    assert (spec.act, spec.down, spec.softcap) == ("mlp.act_fn", "mlp.down_proj", "final_logit_softcapping")
    stats = nl.record(model, nl.testing.char_tokenizer(), {"x": ["abc def"]}, progress=False)
    assert stats.active.shape == (1, 2, 128) and int(stats.tokens[0]) == 7
