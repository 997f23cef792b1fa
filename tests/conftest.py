"""Tiny random models of every architecture family, built in-process from configs (no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from neuronlab.testing import char_tokenizer

SHARED = Path(__file__).resolve().parents[2] / "shared"
STORIES = SHARED / "models" / "stories260K"
FLORES = SHARED / "data" / "flores200_devtest"

V, D, F, L, H = 128, 32, 64, 3, 4  # vocab, d_model, d_ff, layers, heads

CONFIGS = {
    "llama": (
        "LlamaConfig",
        dict(hidden_size=D, intermediate_size=F, num_hidden_layers=L, num_attention_heads=H, num_key_value_heads=2),
    ),
    "mistral": (
        "MistralConfig",
        dict(hidden_size=D, intermediate_size=F, num_hidden_layers=L, num_attention_heads=H, num_key_value_heads=2),
    ),
    "qwen2": (
        "Qwen2Config",
        dict(hidden_size=D, intermediate_size=F, num_hidden_layers=L, num_attention_heads=H, num_key_value_heads=2),
    ),
    "qwen3": (
        "Qwen3Config",
        dict(
            hidden_size=D,
            intermediate_size=F,
            num_hidden_layers=L,
            num_attention_heads=H,
            num_key_value_heads=2,
            head_dim=8,
        ),
    ),
    "gemma": (
        "GemmaConfig",
        dict(
            hidden_size=D,
            intermediate_size=F,
            num_hidden_layers=L,
            num_attention_heads=H,
            num_key_value_heads=2,
            head_dim=8,
        ),
    ),
    "gemma2": (
        "Gemma2Config",
        dict(
            hidden_size=D,
            intermediate_size=F,
            num_hidden_layers=L,
            num_attention_heads=H,
            num_key_value_heads=2,
            head_dim=8,
        ),
    ),
    "gemma3_text": (
        "Gemma3TextConfig",
        dict(
            hidden_size=D,
            intermediate_size=F,
            num_hidden_layers=L,
            num_attention_heads=H,
            num_key_value_heads=2,
            head_dim=8,
        ),
    ),
    "phi3": (
        "Phi3Config",
        dict(
            hidden_size=D,
            intermediate_size=F,
            num_hidden_layers=L,
            num_attention_heads=H,
            num_key_value_heads=2,
            pad_token_id=0,
        ),
    ),
    "olmo": (
        "OlmoConfig",
        dict(hidden_size=D, intermediate_size=F, num_hidden_layers=L, num_attention_heads=H, pad_token_id=0),
    ),
    "gpt2": ("GPT2Config", dict(n_embd=D, n_inner=F, n_layer=L, n_head=H, n_positions=128)),
    "gpt_neox": ("GPTNeoXConfig", dict(hidden_size=D, intermediate_size=F, num_hidden_layers=L, num_attention_heads=H)),
    "opt": (
        "OPTConfig",
        dict(
            hidden_size=D,
            ffn_dim=F,
            num_hidden_layers=L,
            num_attention_heads=H,
            word_embed_proj_dim=D,
            max_position_embeddings=128,
        ),
    ),
    "bloom": ("BloomConfig", dict(hidden_size=D, n_layer=L, n_head=H)),  # d_ff is 4 * d_model
    "phi": ("PhiConfig", dict(hidden_size=D, intermediate_size=F, num_hidden_layers=L, num_attention_heads=H)),
}
ARCHS = sorted(CONFIGS)


def tiny_model(arch: str, seed: int = 0):
    import transformers

    cls_name, kwargs = CONFIGS[arch]
    kwargs = {"pad_token_id": 0, **kwargs}
    config = getattr(transformers, cls_name)(vocab_size=V, bos_token_id=1, eos_token_id=2, **kwargs)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    # random init makes tiny activations; larger weights give every site real spread (and signs)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.3)
    return model.eval()


def save_tiny(path: Path, arch: str, seed: int = 0) -> Path:
    """A tiny model and the character tokenizer saved as a Hugging Face folder (the path a hub id takes)."""
    tiny_model(arch, seed).save_pretrained(path)
    char_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tok():
    return char_tokenizer()


@pytest.fixture(params=ARCHS)
def arch_model(request):
    return request.param, tiny_model(request.param)


def needs_shared(path: Path):
    return pytest.mark.skipif(not path.exists(), reason=f"{path} is absent (../shared sits beside the checkout in CI)")


TEXTS = {
    "en": ["the cat sat on the mat", "a b", "hello world, this is a longer sentence of english text!", "x"],
    "fr": ["le chat est sur le tapis", "bonjour le monde", "ceci est une phrase un peu plus longue"],
}


def pytest_collection_modifyitems(config, items):
    """Tests on the packaged real models (marker `real`) run only when asked for with `-m real` (CI's extra step):
    they load 135M-270M parameter models, which the README's test command leaves out."""
    if "real" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="a real-model test: run it with `python -m pytest -m real` (see tests/real)")
    for item in items:
        if "real" in item.keywords:
            item.add_marker(skip)
