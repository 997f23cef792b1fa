"""The ArchSpec table: every architecture difference neuronlab knows, as data.

    spec = ARCH_SPECS["llama"]              # a row, by model.config.model_type
    spec.layers, spec.down                  # ('model.layers', 'mlp.down_proj')

`layers`, `final_norm` and `unembed` are paths from the causal-LM module; the others are paths from one
decoder layer. `a|b` names alternatives (module names that changed between transformers versions). A site reads the
output of a module (`act`, `ffn_out`, `attn_out`, `resid` = the layer) or
the input of one (`neuron` = the input of `down`). Where a module returns a tuple, the first element is
the value. A model outside the table gets a derived spec, proven on a probe forward (`models/derive.py`,
`models/verify.py`), or an error that shows how to give it an ArchSpec of your own; `models/resolve.py` decides which
and the model carries the result. This module is the bottom of `models/`: it imports nothing of neuronlab's models.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from neuronlab.registry import Registry


@dataclass(frozen=True)
class ArchSpec:
    """Module paths for one Hugging Face `model_type`.

    layers:     the decoder layers (a ModuleList), from the causal-LM root
    act:        the FFN activation function module, from a layer (its output is the `act` site); None: no module
    down:       the FFN down projection, from a layer (its input is the `neuron` site); None: a mixture of experts,
                whose neurons are not served (a neuron of expert e sees only the tokens routed to e)
    ffn_out:    the module whose output is the FFN block's contribution to the residual stream (where the layer is
                not h + attn + ffn: the down projection, proven to be the neurons' only way out of the FFN)
    attn_out:   the module whose output is the attention block's contribution to the residual stream (a hybrid's
                token mixer, `self_attn|mamba`, where layers differ); None: the layer is not h + attn + ffn
                (post-norm, scaled or several residual streams), so no attention output adds up to the next state
    final_norm: the norm (or head transform, as BERT's) between the last layer's output and the unembedding, from
                the root; None: the last layer's output goes straight into the unembedding (GPT-1, XLNet)
    unembed:    the unembedding (LM head), from the root
    up:         the FFN's input projection (a gated FFN's up projection; Phi-3's fused gate_up), from a layer
    gate:       a gated FFN's gate projection, from a layer (None: no separate gate module)
    fused_gate_up: `up` holds the gate and up projections stacked on its output rows, gate first (Phi-3)
    conv1d:     the projections are GPT-2 Conv1D modules, whose weight is [in, out] (nn.Linear's is [out, in])
    flat_ffn:   the FFN runs on flattened tokens [batch * pos, width] (OPT); sites still show [batch, pos, width]
    softcap:    config attribute of the final-logit soft-cap (Gemma 2), None if the family has none
    max_positions: config attribute of the longest sequence the model takes (None: no limit, e.g. ALiBi)
    router:     a mixture of experts' router module, from a layer (None: a dense FFN)
    logit_scale: config attribute of a factor the logits are multiplied by (Cohere, Falcon-H1), None if none
    logit_divisor: config attribute the logits are divided by (Granite's logits_scaling), None if none
    lens:       the unembedding of final_norm(last layer's output) is the model's logits; False where the head does
                more (a scale, several residual streams merged): the logit lens is refused, the other sites served
    """

    layers: str
    act: str | None
    down: str | None
    ffn_out: str
    attn_out: str | None
    final_norm: str | None
    unembed: str
    up: str | None = None
    gate: str | None = None
    fused_gate_up: bool = False
    conv1d: bool = False
    flat_ffn: bool = False
    softcap: str | None = None
    max_positions: str | None = "max_position_embeddings"
    router: str | None = None
    logit_scale: str | None = None
    lens: bool = True
    logit_divisor: str | None = None

    def position_limit(self, config) -> int | None:
        """The longest sequence a model of this family takes (None: no limit)."""
        return getattr(config, self.max_positions, None) if self.max_positions else None

    def logit_cap(self, config) -> float | None:
        """The final-logit soft-cap c (logits <- c * tanh(logits / c)), None where there is none."""
        return getattr(config, self.softcap, None) if self.softcap else None

    def logits(self, config, unembedded: Tensor) -> Tensor:
        """The model's logits from the unembedding's output: scaled (Cohere) or divided (Granite), then soft-capped
        (Gemma 2)."""
        scale = getattr(config, self.logit_scale, None) if self.logit_scale else None
        out = unembedded * scale if scale is not None else unembedded
        divisor = getattr(config, self.logit_divisor, None) if self.logit_divisor else None
        out = out / divisor if divisor is not None else out
        cap = self.logit_cap(config)
        return torch.tanh(out / cap) * cap if cap else out


def text_config(model):
    """The config of a model's language part (the model's own config where it has no sub-configs)."""
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


_LLAMA_LIKE = ArchSpec(
    layers="model.layers",
    act="mlp.act_fn",
    down="mlp.down_proj",
    ffn_out="mlp",
    attn_out="self_attn",
    final_norm="model.norm",
    unembed="lm_head",
    up="mlp.up_proj",
    gate="mlp.gate_proj",
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
    up="mlp.up_proj",
    gate="mlp.gate_proj",
    softcap="final_logit_softcapping",
)

ARCH_SPECS: Registry[ArchSpec] = Registry(
    "architecture",
    ArchSpec,
    entries={
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
            up="mlp.gate_up_proj",
            fused_gate_up=True,
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
            up="mlp.c_fc",
            conv1d=True,
            max_positions="n_positions",
        ),
        "gpt_neox": ArchSpec(
            layers="gpt_neox.layers",
            act="mlp.act",
            down="mlp.dense_4h_to_h",
            ffn_out="mlp",
            attn_out="attention",
            final_norm="gpt_neox.final_layer_norm",
            unembed="lm_head|embed_out",  # transformers 5 renamed embed_out to lm_head
            up="mlp.dense_h_to_4h",
        ),
        "opt": ArchSpec(  # the FFN lives directly in the decoder layer (fc1 -> activation_fn -> fc2)
            layers="model.decoder.layers",
            act="activation_fn",
            down="fc2",
            ffn_out="fc2",
            attn_out="self_attn",
            final_norm="model.decoder.final_layer_norm",
            unembed="lm_head",
            up="fc1",
            flat_ffn=True,
        ),
        "bloom": ArchSpec(  # BloomMLP and BloomAttention add the residual themselves: read their last Linear
            layers="transformer.h",
            act="mlp.gelu_impl",
            down="mlp.dense_4h_to_h",
            ffn_out="mlp.dense_4h_to_h",
            attn_out="self_attention.dense",
            final_norm="transformer.ln_f",
            unembed="lm_head",
            up="mlp.dense_h_to_4h",
            max_positions=None,  # ALiBi: no learned or rotary position limit
        ),
        "phi": ArchSpec(
            layers="model.layers",
            act="mlp.activation_fn",
            down="mlp.fc2",
            ffn_out="mlp",
            attn_out="self_attn",
            final_norm="model.final_layernorm",
            unembed="lm_head",
            up="mlp.fc1",
        ),
    },
)


def register_arch(model_type: str, spec: ArchSpec, replace: bool = False) -> None:
    """Add the ArchSpec used for `model_type` (a row of the table is replaced only with `replace=True`):
    `register_arch("my_llama", ArchSpec(layers="model.layers", ...))`."""
    ARCH_SPECS.add(model_type, spec, replace)
