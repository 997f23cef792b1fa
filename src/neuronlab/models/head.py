"""The head of a derived ArchSpec: what comes between the last layer's output and the logits.

    candidates = head_candidates(model, layers, unembed)   # final_norm candidates, last first
    spec = with_factors(spec, config, head_out, logits, tol)         # the logits' factors, or lens=False

The final norm is a norm outside the layers, or a module holding one (BERT's head transform: dense, activation,
norm) that holds neither the layers, the embeddings nor the unembedding; `derive_spec` picks the candidate whose
input is the last layer's output and whose output feeds the unembedding. The logits are the unembedding's output
multiplied (Cohere's logit_scale, Falcon-H1's lm_head_multiplier) or divided (Granite's logits_scaling) by a number
of the config; where no such factor gives the model's logits, the head does more and the lens is refused.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from torch import Tensor, nn

from neuronlab.models.arch import ArchSpec
from neuronlab.models.verify import close

SCALES = ("logit_scale", "lm_head_multiplier")  # config numbers the logits are multiplied by
DIVISORS = ("logits_scaling",)  # and divided by


def is_norm(name: str, module: nn.Module) -> bool:
    """Whether a module is a norm, by its class name or its own name (`ln_f`, `final_layernorm`)."""
    last = name.rsplit(".", 1)[-1].lower()
    return bool(re.search(r"norm$", type(module).__name__, re.I) or re.search(r"norm|^ln(_|$)", last))


def head_candidates(model: nn.Module, layers: nn.ModuleList, unembed: nn.Module) -> list[str]:
    """final_norm candidates, last first: each norm outside the layers, then the modules holding it."""
    inside, embed = {id(m) for m in layers.modules()}, model.get_input_embeddings()  # type: ignore[operator]
    norms = [
        n for n, m in model.named_modules() if n and id(m) not in inside and is_norm(n, m) and not list(m.children())
    ]
    out: list[str] = []
    for name in norms[::-1]:
        parts = name.split(".")
        for k in range(len(parts), 0, -1):
            module = model.get_submodule(".".join(parts[:k]))
            if any(m is layers or m is unembed or m is embed for m in module.modules()):
                break
            out.append(".".join(parts[:k]))
    return list(dict.fromkeys(out))


def _number(config: Any, key: str) -> bool:
    value = getattr(config, key, None)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def with_factors(spec: ArchSpec, config: Any, head: Tensor, logits: Tensor, tol: float) -> ArchSpec:
    """`spec` with the config's factors that make the unembedding's output `head` the model's `logits`; with
    lens=False where none does."""
    fits = [
        replace(spec, logit_scale=s, logit_divisor=d)
        for s in (None, *(k for k in SCALES if _number(config, k)))
        for d in (None, *(k for k in DIVISORS if _number(config, k)))
        if close(replace(spec, logit_scale=s, logit_divisor=d).logits(config, head), logits, tol)
    ]
    return fits[0] if fits else replace(spec, lens=False)
