"""Forcing or forbidding experts: the router of a mixture of experts choosing, or never choosing, an expert.

    with nl.route(model, {3: {17: "forbid"}}):        # layer 3's router never picks expert 17: it picks another
        model(**batch)
    with nl.route(model, {3: {17: "force"}}, where=mask):   # expert 17 first choice for the tokens where mask holds
        model.generate(**batch)

An edit is an offset on the expert's router logit, added where the router computes its logits, before the family's
own softmax or sigmoid, top-k, group limits and weight normalisation, which then run as they always do: `forbid`
is -inf (the expert's score is 0: the router chooses among the others), `force` is +1e4 (the expert is the first
choice; with a softmax router it takes the token's whole weight), a number is added as it is. Routers that choose on
scores plus a correction bias (DeepSeek-V3, GLM-4-MoE, dots1, ERNIE: `e_score_correction_bias`) get the same offset
on that bias while the block runs (so for every token: `where` is refused there), since it is the biased score that
chooses. Compare `expert_neurons(model, skip=...)`, which keeps the router's choice and silences the expert's
output: here the token's other experts change too.

The logits are found as the output of the one `F.linear` with one column per expert that runs inside the router
module (an `nn.Linear` gate, or a router that calls `F.linear` on its weight, as transformers' routers do); only
the router's own ops pass through that check, and a router that computes its logits otherwise is refused by name in
its first forward. `where`: a [batch, pos] mask of the tokens to edit (None: every token); leave it None when
generating, since each forward of a generation has tokens of its own.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from neuronlab.errors import NeuronlabError
from neuronlab.models.hooks import check_layers, get_module, router_experts
from neuronlab.models.resolve import arch_spec
from neuronlab.models.sites import decoder_layers

OFFSETS = {"forbid": float("-inf"), "force": 1e4}
Routes = Mapping[int, Mapping[int, str | float]]  # {layer: {expert: "force" | "forbid" | offset}}


class _Logits(TorchFunctionMode):
    """While a router computes (pushed by its pre-hook, popped by its forward hook): adds its offsets to the first
    F.linear with one column per expert."""

    def __init__(self, where: Tensor | None) -> None:
        super().__init__()
        self.layer, self.offsets, self.hit = -1, torch.zeros(0), False
        self.where = where  # [tokens] bool, or None: every token

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.hit or func is not F.linear or not isinstance(out, Tensor) or out.shape[-1] != len(self.offsets):
            return out
        self.hit = True
        add = self.offsets.to(out.device, out.dtype)
        if self.where is None:
            return out + add
        flat = out.reshape(-1, out.shape[-1])
        mask = self.where.to(out.device).reshape(-1)
        if len(mask) != len(flat):
            raise NeuronlabError(
                f"route(where=...) marks {len(mask)} tokens, the router of layer {self.layer} sees {len(flat)}: give a "
                "[batch, pos] mask of this forward's tokens (None when generating)"
            )
        return torch.where(mask[:, None], flat + add, flat).reshape(out.shape)


def _offsets(layer: int, edits: Mapping[int, str | float], experts: int) -> Tensor:
    out = torch.zeros(experts)
    for expert, how in edits.items():
        if not 0 <= int(expert) < experts:
            raise NeuronlabError(f"layer {layer}'s router has experts 0..{experts - 1}, not {expert}")
        if isinstance(how, str) and how not in OFFSETS:
            raise NeuronlabError(f"unknown routing edit {how!r}: use force, forbid or a number added to the logit")
        out[int(expert)] = OFFSETS[how] if isinstance(how, str) else float(how)
    return out


def _bias(router: nn.Module) -> Tensor | None:
    """A router's correction bias (DeepSeek-V3's e_score_correction_bias, ERNIE's moe_statics): added to the scores
    that choose the experts but not to their weights, so an edit of the logits alone would not decide the choice."""
    named = [*router.named_buffers(), *router.named_parameters()]
    return next((t for n, t in named if n.endswith("correction_bias")), None)


@contextmanager
def route(model: Any, routes: Routes, where: Tensor | None = None) -> Iterator[None]:
    """Inside the block the routers of `routes` ({layer: {expert: "force" | "forbid" | offset}}) choose with those
    offsets on their logits (module doc); `where` [batch, pos] limits them to some tokens. Hooks are removed after."""
    spec = arch_spec(model)
    if spec.router is None:
        raise NeuronlabError("route needs a mixture of experts: this model's ArchSpec names no router")
    layers = decoder_layers(model)
    check_layers([int(layer) for layer in routes], len(layers))
    planned = []
    for layer, edits in routes.items():
        try:
            router = get_module(layers[int(layer)], spec.router)
        except NeuronlabError:
            raise NeuronlabError(f"layer {layer} has no router at {spec.router!r} (a dense layer?)") from None
        offsets = _offsets(int(layer), edits, router_experts(router))
        bias = _bias(router)
        if bias is not None and where is not None:
            raise NeuronlabError(
                f"the router of layer {layer} chooses with a correction bias that is the same for every token: "
                "route it for all tokens (where=None)"
            )
        planned.append((int(layer), router, offsets, bias))
    mode = _Logits(None if where is None else where.bool())
    handles, saved = [], []
    try:
        for layer, router, offsets, bias in planned:
            if bias is not None:  # the choice is made on the biased scores: the same offsets there, for the block
                saved.append((bias, bias.detach().clone()))
                with torch.no_grad():
                    bias += offsets.to(bias.device, bias.dtype)
            handles.append(router.register_forward_pre_hook(_start(mode, layer, offsets)))
            handles.append(router.register_forward_hook(_end(mode, model)))
        yield
    finally:
        for h in handles:
            h.remove()
        with torch.no_grad():
            for bias, value in saved:
                bias.copy_(value)


def _start(mode: _Logits, layer: int, offsets: Tensor):
    def hook(_m, _args):
        mode.layer, mode.offsets, mode.hit = layer, offsets, False
        mode.__enter__()  # only the router's own ops pass through the mode

    return hook


def _end(mode: _Logits, model: Any):
    def hook(_m, _args, _out):
        mode.__exit__(None, None, None)
        if not mode.hit:
            raise NeuronlabError(
                f"the router of layer {mode.layer} does not compute its logits with F.linear: routing edits are not "
                f"served for {type(model).__name__}"
            )

    return hook
