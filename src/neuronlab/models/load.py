"""Load any Hugging Face causal LM and tokenizer, and describe a model so results can be matched to it.

    >>> model, tok = load_model("EleutherAI/pythia-160m", revision="step1000", dtype="bfloat16")
    >>> model, tok = load_model("../shared/models/stories260K")      # a local folder works the same way
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from neuronlab.errors import NeuronlabError
from neuronlab.models.arch import ArchSpec, arch_spec
from neuronlab.models.sites import decoder_layers, site_width

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
PROBE_VALUES = 16  # weight values kept as a fingerprint, compared with a tolerance (dtype-robust)


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise NeuronlabError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_model(
    name_or_path: str | Path,
    dtype: str | torch.dtype | None = None,
    device: str | None = None,
    revision: str | None = None,
    device_map: str | dict | None = None,
    trust_remote_code: bool = False,
    arch: ArchSpec | None = None,
) -> tuple[nn.Module, object]:
    """A causal LM in eval mode and its tokenizer (given a pad token if it has none).

    `name_or_path` is a hub id or a local folder; `revision` a branch, tag or commit (Pythia's
    `step1000`); `dtype` float32/float16/bfloat16 (default: the checkpoint's own); `device` one device
    ("cuda:0") or `device_map` ("auto") to spread a large model over several. Fails early, with the fix,
    if the architecture is not in the ArchSpec table and no `arch` is given.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if device is not None and device_map is not None:
        raise NeuronlabError("pass either device or device_map, not both")
    kwargs = dict(revision=revision, trust_remote_code=trust_remote_code)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            name_or_path, dtype=resolve_dtype(dtype) or "auto", device_map=device_map, **kwargs
        )
    except (OSError, ValueError) as err:  # missing folder, unknown hub id, malformed config
        raise NeuronlabError(f"cannot load model {str(name_or_path)!r}: {err}") from err
    if device is not None:
        model = model.to(device)
    model.eval()
    model.neuronlab_revision = revision
    arch_spec(model, arch)  # unknown architectures fail here, not in the middle of a run
    ensure_pad_token(tokenizer)
    return model, tokenizer


def ensure_pad_token(tokenizer) -> None:
    """Give a tokenizer without a pad token one (EOS, else UNK, else BOS); padding is always masked."""
    if tokenizer.pad_token_id is not None:
        return
    for name in ("eos_token", "unk_token", "bos_token"):
        token = getattr(tokenizer, name, None)
        if token is not None:
            tokenizer.pad_token = token
            return
    raise NeuronlabError("the tokenizer has no pad, EOS, UNK or BOS token: set tokenizer.pad_token first")


def model_info(model: nn.Module, arch: ArchSpec | None = None) -> dict:
    """Identity of a model, saved with every result: name, revision, shape and a weight probe."""
    config = model.config
    embed = model.get_input_embeddings().weight
    flat = embed.detach().reshape(-1)
    step = max(1, flat.numel() // PROBE_VALUES)
    probe = flat[::step][:PROBE_VALUES].float().cpu().tolist()
    return {
        "name_or_path": str(getattr(config, "_name_or_path", "") or ""),
        "revision": getattr(model, "neuronlab_revision", None),
        "model_type": config.model_type,
        "n_layers": len(decoder_layers(model, arch)),
        "d_model": site_width(model, "ffn_out", arch),
        "d_ff": site_width(model, "act", arch),
        "vocab": int(embed.shape[0]),
        "probe": [round(v, 6) for v in probe],
    }


def same_model(a: dict, b: dict) -> str | None:
    """None if two model_info dicts describe the same weights, else what differs."""
    for key in ("model_type", "n_layers", "d_model", "d_ff", "vocab"):
        if a.get(key) != b.get(key):
            return f"{key} {a.get(key)} != {b.get(key)}"
    pa, pb = torch.tensor(a["probe"]), torch.tensor(b["probe"])
    if pa.shape != pb.shape or not torch.allclose(pa, pb, rtol=2e-2, atol=1e-3):
        return "the weights differ (embedding probe)"
    return None
