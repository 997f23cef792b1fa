"""Small real objects for tests and benchmarks: built in-process, nothing downloaded.

tok = char_tokenizer()          # one token per character, BOS added; ids < 128
"""

from __future__ import annotations

import string
from typing import Any


def char_tokenizer():
    """A real fast tokenizer: one token per character, BOS added, no EOS."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    chars = string.ascii_letters + string.digits + string.punctuation + " "
    vocab = {tok: i for i, tok in enumerate(specials + list(chars))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_input_names=["input_ids", "attention_mask"],
    )


# Sizes for `tiny_causal_lm`, by the config argument names families use (a family takes the ones it knows).
TINY: dict[str, Any] = dict(
    hidden_size=32,
    n_embd=32,
    d_model=32,
    intermediate_size=64,
    n_inner=64,
    ffn_dim=64,
    ffn_hidden_size=64,
    word_embed_proj_dim=32,
    moe_intermediate_size=16,
    shared_expert_intermediate_size=32,
    num_hidden_layers=2,
    n_layer=2,
    num_layers=2,
    n_layers=2,
    num_attention_heads=4,
    n_head=4,
    n_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    rotary_dim=4,
    vocab_size=128,
    max_position_embeddings=128,
    n_positions=128,
    num_experts=4,
    num_local_experts=4,
    n_routed_experts=4,
    num_experts_per_tok=2,
    n_shared_experts=1,
    kv_lora_rank=16,
    q_lora_rank=16,
    qk_rope_head_dim=8,
    qk_nope_head_dim=8,
    v_head_dim=8,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)
MAX_TINY_PARAMETERS = 3_000_000
_MLA = dict(num_key_value_heads=4, n_group=1, topk_group=1, first_k_dense_replace=1)  # DeepSeek's latent attention
_HYBRID = dict(layer_types=["linear_attention", "full_attention"])  # one layer of each kind, so a cache has attention
_MAMBA = dict(mamba_n_heads=4, mamba_d_head=16)
EXTRA: dict[str, dict[str, Any]] = {
    "gpt_neo": dict(attention_types=[[["global", "local"], 1]]),
    **dict.fromkeys(
        (
            "axk1",
            "axk2",
            "deepseek_v2",
            "deepseek_v3",
            "deepseek_v32",
            "glm4_moe_lite",
            "glm_moe_dsa",
            "longcat_flash",
            "minicpm3",
            "sarvam_mla",
            "youtu",
        ),
        _MLA,
    ),
    **dict.fromkeys(("qwen3_next", "qwen3_5_text", "qwen3_5_moe_text"), _HYBRID),
    "jamba": dict(
        attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2, expert_layer_offset=1, use_mamba_kernels=False
    ),
    "recurrent_gemma": dict(block_types=["recurrent", "attention"], intermediate_size=128),  # d_ff is half of it
    "lfm3": dict(layer_types=["conv", "full_attention"]),
    "bamba": _MAMBA | dict(attn_layer_indices=[1]),
    "granitemoehybrid": _MAMBA | dict(layer_types=["mamba", "attention"]),
    "falcon_h1": dict(mamba_d_ssm=64, mamba_n_heads=8, mamba_d_head=8, mamba_d_state=16, mamba_chunk_size=16),
    "zamba2": dict(layers_block_type=["mamba", "hybrid"]),
    "lfm2_moe": dict(layer_types=["conv", "full_attention"], num_dense_layers=1),
    "zaya": dict(num_experts_per_tok=1),
    "plbart": dict(encoder_attention_heads=4, decoder_attention_heads=4),
}


LAYER_NAMES = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")


def tiny_causal_lm(model_type: str, seed: int = 0, layers: int = 2, spread: float | None = None):
    """A tiny random `*ForCausalLM` of any registered `model_type`: its config's defaults with the sizes above
    (and the few settings in EXTRA that some families need to shrink), `layers` decoder layers. `spread`: draw
    every weight matrix from N(0, spread) instead of the family's small init, so every site has real spread (and
    signs). Raises ValueError where the family does not shrink (sub-configs of their own, over 3M parameters)."""
    import inspect

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cls = type(AutoConfig.for_model(model_type))
    takes = set(inspect.signature(cls.__init__).parameters)
    sizes = TINY | dict.fromkeys(LAYER_NAMES, layers)
    config = cls(**{k: v for k, v in sizes.items() if k in takes} | EXTRA.get(model_type, {}))
    with torch.device("meta"):
        n = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    if n > MAX_TINY_PARAMETERS:
        raise ValueError(f"{model_type} does not shrink: {n:,} parameters with the tiny sizes")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    if spread is not None:
        with torch.no_grad():
            for w in model.parameters():
                if w.dim() >= 2:
                    w.normal_(0, spread)
    return model.eval()
