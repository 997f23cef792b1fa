"""The ArchSpec table: every architecture difference neuronlab knows, as data.

    >>> spec = arch_spec(model)                 # looked up by model.config.model_type
    >>> spec.layers, spec.down
    ('model.layers', 'mlp.down_proj')

`layers`, `final_norm` and `unembed` are paths from the causal-LM module; the others are paths from one
decoder layer. `a|b` names alternatives (module names that changed between transformers versions). A site reads the output of a module (`act`, `ffn_out`, `attn_out`, `resid` = the layer) or
the input of one (`neuron` = the input of `down`). Where a module returns a tuple, the first element is
the value. A model outside the table fails with an error that shows how to pass an ArchSpec of your own.
"""

from __future__ import annotations

from dataclasses import dataclass

from neuronlab.errors import NeuronlabError


@dataclass(frozen=True)
class ArchSpec:
    """Module paths for one Hugging Face `model_type`.

    layers:     the decoder layers (a ModuleList), from the causal-LM root
    act:        the FFN activation function module, from a layer (its output is the `act` site)
    down:       the FFN down projection, from a layer (its input is the `neuron` site)
    ffn_out:    the module whose output is the FFN block's contribution to the residual stream
    attn_out:   the module whose output is the attention block's contribution to the residual stream
    final_norm: the norm applied before the unembedding, from the root
    unembed:    the unembedding (LM head), from the root
    """

    layers: str
    act: str
    down: str
    ffn_out: str
    attn_out: str
    final_norm: str
    unembed: str


_LLAMA_LIKE = ArchSpec(
    layers="model.layers",
    act="mlp.act_fn",
    down="mlp.down_proj",
    ffn_out="mlp",
    attn_out="self_attn",
    final_norm="model.norm",
    unembed="lm_head",
)
# Gemma 2/3 normalise each block's output before adding it to the residual stream.
_GEMMA2_LIKE = ArchSpec(
    layers="model.layers",
    act="mlp.act_fn",
    down="mlp.down_proj",
    ffn_out="post_feedforward_layernorm",
    attn_out="post_attention_layernorm",
    final_norm="model.norm",
    unembed="lm_head",
)

ARCH_SPECS: dict[str, ArchSpec] = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "olmo": _LLAMA_LIKE,
    "phi3": ArchSpec(  # fused gate_up_proj; the activation still sees only the gate half
        layers="model.layers",
        act="mlp.activation_fn",
        down="mlp.down_proj",
        ffn_out="mlp",
        attn_out="self_attn",
        final_norm="model.norm",
        unembed="lm_head",
    ),
    "gemma2": _GEMMA2_LIKE,
    "gemma3_text": _GEMMA2_LIKE,
    "gpt2": ArchSpec(
        layers="transformer.h",
        act="mlp.act",
        down="mlp.c_proj",
        ffn_out="mlp",
        attn_out="attn",
        final_norm="transformer.ln_f",
        unembed="lm_head",
    ),
    "gpt_neox": ArchSpec(
        layers="gpt_neox.layers",
        act="mlp.act",
        down="mlp.dense_4h_to_h",
        ffn_out="mlp",
        attn_out="attention",
        final_norm="gpt_neox.final_layer_norm",
        unembed="lm_head|embed_out",  # transformers 5 renamed embed_out to lm_head
    ),
    "opt": ArchSpec(  # the FFN lives directly in the decoder layer (fc1 -> activation_fn -> fc2)
        layers="model.decoder.layers",
        act="activation_fn",
        down="fc2",
        ffn_out="fc2",
        attn_out="self_attn",
        final_norm="model.decoder.final_layer_norm",
        unembed="lm_head",
    ),
    "bloom": ArchSpec(  # BloomMLP and BloomAttention add the residual themselves: read their last Linear
        layers="transformer.h",
        act="mlp.gelu_impl",
        down="mlp.dense_4h_to_h",
        ffn_out="mlp.dense_4h_to_h",
        attn_out="self_attention.dense",
        final_norm="transformer.ln_f",
        unembed="lm_head",
    ),
    "phi": ArchSpec(
        layers="model.layers",
        act="mlp.activation_fn",
        down="mlp.fc2",
        ffn_out="mlp",
        attn_out="self_attn",
        final_norm="model.final_layernorm",
        unembed="lm_head",
    ),
}

_HOW_TO = """Pass an ArchSpec of your own, for example:

    import neuronlab as nl
    spec = nl.ArchSpec(layers="model.layers", act="mlp.act_fn", down="mlp.down_proj", ffn_out="mlp",
                       attn_out="self_attn", final_norm="model.norm", unembed="lm_head")
    nl.register_arch("{model_type}", spec)      # or pass arch=spec where a function takes it

Print `model` to see its module names."""


def register_arch(model_type: str, spec: ArchSpec) -> None:
    """Add or replace the ArchSpec used for `model_type`.

    >>> register_arch("my_llama", ArchSpec(layers="model.layers", ...))
    """
    ARCH_SPECS[model_type] = spec


def arch_spec(model, arch: ArchSpec | None = None) -> ArchSpec:
    """The ArchSpec of `model`: `arch` if given, else the table row for `model.config.model_type`."""
    if arch is not None:
        return arch
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ARCH_SPECS:
        known = ", ".join(sorted(ARCH_SPECS))
        raise NeuronlabError(
            f"unknown architecture {model_type!r}: neuronlab knows {known}.\n" + _HOW_TO.format(model_type=model_type)
        )
    return ARCH_SPECS[model_type]
