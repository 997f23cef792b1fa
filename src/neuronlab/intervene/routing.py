"""Forcing or forbidding experts: the router of a mixture of experts choosing, or never choosing, an expert.

    with nl.route(model, {3: {17: "forbid"}}):        # layer 3's router never picks expert 17: it picks another
        model(**batch)
    with nl.route(model, {3: {17: "force"}}, where=mask):   # expert 17 first choice for the tokens where mask holds
        model.generate(**batch)

An edit is an offset on the expert's router logit, added where the router computes its logits, before the family's
own softmax or sigmoid, top-k, group limits and weight normalisation, which then run as they always do: `forbid`
is -inf (the expert's score is 0, so it is never chosen where a score decides, and adds nothing where a bias-corrected
choice still lands on it, as DeepSeek's may), `force` is +1e4 (the expert is the first choice; with a softmax router
it takes the token's whole weight), a number is added as it is. Compare `expert_neurons(model, skip=...)`, which
keeps the router's choice and silences the expert's output: here the token's other experts change too.

The logits are found as the output of the one `F.linear` with one column per expert that runs inside the router
module (an `nn.Linear` gate, or a router that calls `F.linear` on its weight, as transformers' routers do); a
router that computes them otherwise is refused by name after the first forward. `where`: a [batch, pos] mask of the
tokens to edit (None: every token); the cache of generation is fine, since the mask is read per forward, but then
`where` must fit the shape of each forward's tokens, so leave it None when generating.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from neuronlab.errors import NeuronlabError
from neuronlab.models.hooks import get_module
from neuronlab.models.resolve import arch_spec
from neuronlab.models.sites import decoder_layers

OFFSETS = {"forbid": float("-inf"), "force": 1e4}
Routes = Mapping[int, Mapping[int, str | float]]  # {layer: {expert: "force" | "forbid" | offset}}


class _Logits(TorchFunctionMode):
    """Adds the active router's offsets to the first F.linear with one column per expert inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.active: tuple[int, Tensor] | None = None  # (layer, offsets [experts]) while a router computes
        self.where: Tensor | None = None  # [tokens] bool
        self.missed: set[int] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.active is not None and func is F.linear and isinstance(out, Tensor):
            layer, offsets = self.active
            if out.shape[-1] == len(offsets):
                self.active = None
                add = offsets.to(out.device, out.dtype)
                if self.where is None:
                    return out + add
                flat = out.reshape(-1, out.shape[-1])
                mask = self.where.to(out.device).reshape(-1)
                if len(mask) != len(flat):
                    raise NeuronlabError(
                        f"route(where=...) marks {len(mask)} tokens, the router of layer {layer} sees {len(flat)}: "
                        "give a [batch, pos] mask of this forward's tokens (None when generating)"
                    )
                return torch.where(mask[:, None], flat + add, flat).reshape(out.shape)
        return out


def _offsets(layer: int, edits: Mapping[int, str | float], experts: int) -> Tensor:
    out = torch.zeros(experts)
    for expert, how in edits.items():
        if not 0 <= int(expert) < experts:
            raise NeuronlabError(f"layer {layer}'s router has experts 0..{experts - 1}, not {expert}")
        if isinstance(how, str) and how not in OFFSETS:
            raise NeuronlabError(f"unknown routing edit {how!r}: use force, forbid or a number added to the logit")
        out[int(expert)] = OFFSETS[how] if isinstance(how, str) else float(how)
    return out


@contextmanager
def route(model: Any, routes: Routes, where: Tensor | None = None) -> Iterator[None]:
    """Inside the block the routers of `routes` ({layer: {expert: "force" | "forbid" | offset}}) choose with those
    offsets on their logits (module doc); `where` [batch, pos] limits them to some tokens. Hooks are removed after."""
    spec = arch_spec(model)
    if spec.router is None:
        raise NeuronlabError("route needs a mixture of experts: this model's ArchSpec names no router")
    layers = decoder_layers(model)
    mode, handles = _Logits(), []
    mode.where = None if where is None else where.bool()
    for layer, edits in routes.items():
        layer = int(layer)
        if not 0 <= layer < len(layers):
            raise NeuronlabError(f"layer {layer} is out of range: this model has layers 0..{len(layers) - 1}")
        try:
            router = get_module(layers[layer], spec.router)
        except NeuronlabError:
            raise NeuronlabError(f"layer {layer} has no router at {spec.router!r} (a dense layer?)") from None
        weight = getattr(router, "weight", None)
        if not isinstance(weight, Tensor) or weight.dim() != 2:
            raise NeuronlabError(f"the router of layer {layer} has no 2-D weight [experts, d_model]")
        offsets = _offsets(layer, edits, weight.shape[0])

        def start(_m, _args, layer=layer, offsets=offsets):
            mode.active = (layer, offsets)

        def end(_m, _args, _out, layer=layer):
            if mode.active is not None:  # no F.linear with one column per expert ran inside the router
                mode.active = None
                mode.missed.add(layer)

        handles += [router.register_forward_pre_hook(start), router.register_forward_hook(end)]
    try:
        with mode:
            yield
    finally:
        for h in handles:
            h.remove()
    if mode.missed:
        raise NeuronlabError(
            f"the router of layer {min(mode.missed)} does not compute its logits with F.linear: routing edits are "
            f"not served for {type(model).__name__}"
        )
