"""The neurons of a mixture of experts: a neuron is (layer, expert, index), and its value exists only for the tokens
the router sends to that expert.

    with expert_neurons(model, lambda layer, expert, tokens, weights, h: h * keep):  # h: [routed tokens, d_ff]
        model(**batch)
    with expert_neurons(model, skip={3: [17]}):   # expert 17 of layer 3 silenced where the router chose it
        model(**batch)
    layers = experts_by_layer(model)        # {layer: ExpertsLayout}: the experts of each MoE layer

In transformers 5 the experts of most families are one module with 3-D weights (`gate_up_proj` [E, 2 d_ff, d] and
`down_proj` [E, d, d_ff], or transposed as in gpt-oss, with biases there) whose class is wrapped by transformers'
`use_experts_implementation`; the whole computation runs inside its forward (eager, grouped or batched matmuls),
so no module hook sees an expert's neurons. Inside `expert_neurons` each such module computes with this file's
loop instead: for each expert the router chose, the tokens routed to it, their neurons h = the expert's own gate
(`_apply_gate`: act(gate) * up, or gpt-oss's clamped GLU) or act(up) where there is no gate, then the down
projection and the router's weight, exactly as transformers' eager loop does. `fn(layer, expert, tokens, weights,
h)` sees h (tokens: indices into the block's flattened [batch * pos] tokens; weights: the router's weight of this
expert for each) and returns a replacement or None. Outside the block the module is the model's own again.

In transformers 4 the experts are a list of MLP modules that the block calls with the rows of the tokens routed to
each; inside the block each computes itself (act(gate) * up, then down) with `fn` seeing h, the tokens found by an
exact fingerprint of their rows among the block's input rows. The block applies the router's weights after the
expert returns, so there `weights` are NaN.

Llama 4's experts take every token, scaled by the router's weight (0 where not chosen): inside the block each
expert computes the rows the block scaled by a non-zero weight, and its neurons are those of the scaled rows, as
Llama 4 has them. A block's shared expert (one MLP every token goes through) is expert SHARED (-1), shown to `fn`
with `shared=True`. `check_experts` (`models/moe_check.py`) proves all of it on a probe forward. Families whose
experts compute otherwise (a norm after each expert, JetMoE's parallel experts, gpt-oss under transformers 4) are
refused by name.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuronlab.errors import NeuronlabError
from neuronlab.models.resolve import arch_spec
from neuronlab.models.sites import decoder_layers

NeuronFn = Callable[[int, int, Tensor, Tensor, Tensor], Tensor | None]  # (layer, expert, tokens, weights, h) -> h
FLAGS = ("has_gate", "has_bias", "is_transposed")  # what transformers' experts decorator sets on the module


@dataclass(frozen=True)
class ExpertsLayout:
    """One MoE layer's experts: their module's path in the layer, the number of experts and each one's d_ff;
    `names` (gate, up, down) where they are a list of expert modules (transformers 4), None where fused; `scaled`:
    Llama 4's experts, which take every token scaled by its router weight (0 where not chosen)."""

    path: str
    experts: int
    d_ff: int
    names: tuple[str, str, str] | None = None
    scaled: bool = False
    shared: str | None = None  # the shared expert(s): one MLP every token goes through, expert index SHARED
    shared_gate: str | None = None  # a sigmoid gate on the shared expert's output (Qwen-MoE), from the layer
    shared_d_ff: int = 0
    adds_up: bool | None = None  # check_experts: the block's output is its experts' plus its shared expert's


LISTED_NAMES = (("gate_proj", "up_proj", "down_proj"), ("w1", "w3", "w2"))  # transformers 4's expert MLPs
SHARED = -1  # the expert index of a layer's shared expert(s), which families hold as one MLP beside the experts
SHARED_NAME = re.compile(r"^shared_(experts?|mlp)$")


def _is_fused(module: nn.Module) -> bool:
    down = getattr(module, "down_proj", None)
    return all(hasattr(module, f) for f in FLAGS) and isinstance(down, torch.Tensor) and down.dim() == 3


def _is_scaled(module: nn.Module) -> bool:
    """Llama 4's experts: `gate_up_proj` [E, d, 2 d_ff] and `down_proj` [E, d_ff, d] applied with bmm to every
    token, whose input the block has scaled by the router's weight (0 for experts not chosen)."""
    gate_up, down = getattr(module, "gate_up_proj", None), getattr(module, "down_proj", None)
    return (
        type(module).__name__ == "Llama4TextExperts"
        and isinstance(gate_up, torch.Tensor)
        and isinstance(down, torch.Tensor)
        and gate_up.dim() == down.dim() == 3
        and gate_up.shape[2] == 2 * down.shape[1]
    )


def _listed(module: nn.Module) -> tuple[str, str, str] | None:
    """The (gate, up, down) names where `module` is a list of gated expert MLPs (transformers 4), else None."""
    if not isinstance(module, nn.ModuleList) or len(module) < 2:
        return None
    for names in LISTED_NAMES:
        if all(hasattr(m, "act_fn") and all(isinstance(getattr(m, n, None), nn.Linear) for n in names) for m in module):
            return names
    return None


def _layout(name: str, module: Any) -> ExpertsLayout:
    if names := _listed(module):
        return ExpertsLayout(name, len(module), getattr(module[0], names[2]).in_features, names)
    if _is_scaled(module):
        return ExpertsLayout(name, int(module.down_proj.shape[0]), int(module.down_proj.shape[1]), scaled=True)
    if getattr(module, "has_post_expert_norm", False):
        raise NeuronlabError(
            f"{type(module).__name__} normalizes each expert's output: its expert neurons are not served yet"
        )
    down = module.down_proj
    return ExpertsLayout(name, int(down.shape[0]), int(down.shape[1] if module.is_transposed else down.shape[2]))


def _with_shared(layer: nn.Module, lay: ExpertsLayout) -> ExpertsLayout:
    """`lay` with the shared expert of its block, where the block holds one (an MLP named like shared_experts with
    a `down_proj`), and the sigmoid gate on its output (`shared_expert_gate`) where there is one."""
    block_path = lay.path.rpartition(".")[0]
    block = layer.get_submodule(block_path) if block_path else layer
    prefix = f"{block_path}." if block_path else ""
    for name, module in block.named_children():
        down = getattr(module, "down_proj", None)
        if SHARED_NAME.match(name) and isinstance(down, nn.Linear):
            gate = isinstance(getattr(block, "shared_expert_gate", None), nn.Linear)
            return replace(
                lay,
                shared=prefix + name,
                shared_gate=prefix + "shared_expert_gate" if gate else None,
                shared_d_ff=down.in_features,
            )
    return lay


def experts_by_layer(model: nn.Module) -> dict[int, ExpertsLayout]:
    """{layer: the layout of its experts} for every layer that has them (module doc); one clear error for a model
    with no mixture of experts, or whose experts are neither fused nor a list of gated MLPs."""
    found = {}
    for i, layer in enumerate(decoder_layers(model)):
        fused = [(n, m) for n, m in layer.named_modules() if _is_fused(m) or _listed(m) or _is_scaled(m)]
        if len(fused) > 1:
            raise NeuronlabError(f"layer {i} holds {len(fused)} experts modules; expert neurons need one a layer")
        if fused:
            found[i] = _with_shared(layer, _layout(*fused[0]))
    if not found:
        why = (
            "its experts are neither one fused module under transformers' experts implementation nor a list of "
            "gated expert MLPs (JetMoE's experts are not served yet)"
            if arch_spec(model).router
            else "it is not a mixture of experts (dense FFN neurons are the `act` and `neuron` sites)"
        )
        raise NeuronlabError(f"{type(model).__name__} has no expert neurons to serve: {why}")
    return found


def _neurons(self: Any, x: Tensor, e: int) -> Tensor:
    """The neurons [tokens, d_ff] of expert e for its routed tokens' inputs x (transformers' eager arithmetic)."""
    weight = self.gate_up_proj[e] if self.has_gate else self.up_proj[e]
    proj = x @ weight if self.is_transposed else F.linear(x, weight)
    if self.has_bias:
        proj = proj + (self.gate_up_proj_bias[e] if self.has_gate else self.up_proj_bias[e])
    return self._apply_gate(proj) if self.has_gate else self.act_fn(proj)


def _down(self: Any, h: Tensor, e: int) -> Tensor:
    y = h @ self.down_proj[e] if self.is_transposed else F.linear(h, self.down_proj[e])
    return y + self.down_proj_bias[e] if self.has_bias else y


def _forward(self: Any, hidden_states: Tensor, top_k_index: Tensor, top_k_weights: Tensor) -> Tensor:
    """The experts' forward as transformers' eager loop computes it, with `self._neuronlab_fn` seeing each
    expert's neurons."""
    out = torch.zeros_like(hidden_states)
    experts = self.down_proj.shape[0]
    for e in torch.unique(top_k_index).tolist():
        if not 0 <= e < experts or e in self._neuronlab_skip:  # "no expert" in some routers; or silenced
            continue
        tokens, slot = torch.where(top_k_index == e)
        weights = top_k_weights[tokens, slot]
        h = _neurons(self, hidden_states[tokens], e)
        changed = self._neuronlab_fn(e, tokens, weights, h)
        y = _down(self, h if changed is None else changed, e)
        out.index_add_(0, tokens, (y * weights[:, None]).to(out.dtype))
    return out


def _scaled_forward(self: Any, hidden_states: Tensor) -> Tensor:
    """Llama 4's experts as their bmm computes them, expert by expert: expert e's tokens are the rows the block
    scaled by a non-zero router weight (the others are 0 and give 0); their neurons are up * act(gate) of the scaled
    row, as Llama 4 computes them. The weights are inside the rows: NaN here."""
    experts, width = self.gate_up_proj.shape[0], self.gate_up_proj.shape[1]
    x = hidden_states.view(experts, -1, width)
    out = torch.zeros(experts, x.shape[1], self.down_proj.shape[2], dtype=hidden_states.dtype, device=x.device)
    for e in range(experts):
        tokens = torch.nonzero(x[e].ne(0).any(-1)).flatten()
        if e in self._neuronlab_skip or len(tokens) == 0:
            continue
        gate, up = (x[e, tokens] @ self.gate_up_proj[e]).chunk(2, dim=-1)
        h = up * self.act_fn(gate)
        weights = torch.full((len(tokens),), float("nan"), device=x.device)
        changed = self._neuronlab_fn(e, tokens, weights, h)
        out[e, tokens] = (h if changed is None else changed) @ self.down_proj[e]
    return out.view(-1, out.shape[-1])


def _fingerprint(rows: Tensor, salt: Tensor) -> Tensor:
    """An int64 fingerprint of each row's bits [n, d] -> [n]: equal rows, equal fingerprints, on any device."""
    bits = rows.contiguous().view({2: torch.int16, 4: torch.int32, 8: torch.int64}[rows.element_size()])
    return (bits.long() * salt.to(rows.device)).sum(-1)


def _listed_forward(self: Any, x: Tensor) -> Tensor:
    """One expert MLP of a list (transformers 4) as it computes itself, with its owner's function seeing its
    neurons; the tokens are the rows of the block's input that the block gathered for it (matched by fingerprint;
    their router weights are not visible here: NaN)."""
    owner, e = self._neuronlab_owner, self._neuronlab_expert
    gate, up, down = (getattr(self, n) for n in owner._neuronlab_names)
    if e in owner._neuronlab_skip:
        return x.new_zeros(*x.shape[:-1], down.out_features)
    h = self.act_fn(gate(x)) * up(x)
    keys, order = owner._neuronlab_rows
    found = _fingerprint(x.reshape(-1, x.shape[-1]), owner._neuronlab_salt)
    at = torch.searchsorted(keys, found).clamp(max=len(keys) - 1)
    if not torch.equal(keys[at], found):
        raise NeuronlabError("an expert's input rows are not rows of its block's input: expert neurons not served")
    weights = torch.full((len(found),), float("nan"), device=x.device)
    changed = owner._neuronlab_fn(e, order[at], weights, h)
    return down(h if changed is None else changed)


def _block_rows(owner: Any) -> Callable:
    """A forward pre-hook for the MoE block that owns a list of experts: the sorted fingerprints of its input's
    rows (flattened [batch * pos]) and their order, for `_listed_forward` to find each expert's tokens."""

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        keys, order = torch.sort(_fingerprint(hidden.reshape(-1, hidden.shape[-1]), owner._neuronlab_salt))
        owner._neuronlab_rows = (keys, order)

    return hook


def _shared_hooks(module: nn.Module, fn: NeuronFn | None, layer: int, silenced: bool, gated: bool) -> list:
    """Hooks on a shared expert: `fn(layer, SHARED, tokens, weights, h)` sees its neurons (the input of its down
    projection) for every token, weights 1 (NaN where a gate scales its output after); silenced, it adds nothing."""
    handles = []
    if fn is not None:

        def pre(_m, args):
            h = args[0]
            flat = h.reshape(-1, h.shape[-1])
            tokens = torch.arange(len(flat), device=h.device)
            weights = torch.full((len(flat),), float("nan") if gated else 1.0, device=h.device)
            new = fn(layer, SHARED, tokens, weights, flat)
            return None if new is None else (new.reshape(h.shape), *args[1:])

        handles.append(module.get_submodule("down_proj").register_forward_pre_hook(pre))
    if silenced:
        handles.append(module.register_forward_hook(lambda _m, _a, out: torch.zeros_like(out)))
    return handles


@contextmanager
def expert_neurons(
    model: nn.Module,
    fn: NeuronFn | None = None,
    skip: Mapping[int, Iterable[int]] | None = None,
    shared: bool = False,
) -> Iterator[dict[int, ExpertsLayout]]:
    """Inside the block every fused experts module computes through this file's loop (module doc), calling
    `fn(layer, expert, tokens, weights, h)` for each expert the router chose; the experts in `skip` ({layer:
    [expert, ...]}) add nothing, as if the router gave them weight 0 (the other chosen experts keep their weights).
    With `shared`, `fn` also sees each layer's shared expert as expert `SHARED` (-1), on every token; `skip` may
    name it too. Yields {layer: layout}. The modules' own forwards come back in `finally`."""
    layouts = experts_by_layer(model)
    shared = shared or bool(getattr(fn, "shared", False))  # an expert_edit that names a shared expert
    silenced = {int(layer): {int(e) for e in es} for layer, es in (skip or {}).items()}
    if set(silenced) - set(layouts):
        raise NeuronlabError(
            f"no experts in layers {sorted(set(silenced) - set(layouts))}: MoE layers {sorted(layouts)}"
        )
    layers = decoder_layers(model)
    modules: dict[int, Any] = {i: layers[i].get_submodule(lay.path) for i, lay in layouts.items()}
    handles, patched = [], []
    try:
        for i, lay in layouts.items():
            quiet = SHARED in silenced.get(i, ())
            if lay.shared and (shared or quiet):
                owner = layers[i].get_submodule(lay.shared)
                handles += _shared_hooks(owner, fn if shared else None, i, quiet, lay.shared_gate is not None)
            elif quiet:
                raise NeuronlabError(f"layer {i} has no shared expert to silence")
        for i, module in modules.items():
            module._neuronlab_fn = (lambda e, t, w, h, i=i: fn(i, e, t, w, h)) if fn else (lambda e, t, w, h: None)
            module._neuronlab_skip = silenced.get(i, set())
            names = layouts[i].names
            if names is None:  # fused: the module's forward, replaced on the instance (over the class's)
                module.forward = types.MethodType(_scaled_forward if layouts[i].scaled else _forward, module)
                patched.append(module)
                continue
            module._neuronlab_names = names
            width = getattr(module[0], names[0]).in_features
            module._neuronlab_salt = torch.randint(1, 2**31, (width,), generator=torch.Generator().manual_seed(i))
            block = layers[i].get_submodule(layouts[i].path.rpartition(".")[0])
            handles.append(block.register_forward_pre_hook(_block_rows(module), with_kwargs=True))
            for e, expert in enumerate(module):
                object.__setattr__(expert, "_neuronlab_owner", module)  # a plain attribute, not a submodule
                expert._neuronlab_expert = e
                expert.forward = types.MethodType(_listed_forward, expert)
                patched.append(expert)
        yield layouts
    finally:
        for h in handles:
            h.remove()
        for module in [*modules.values(), *patched]:
            for key in [k for k in module.__dict__ if k == "forward" or k.startswith("_neuronlab_")]:
                del module.__dict__[key]


def down_weight(
    model: nn.Module, layer: int, expert: int, layouts: Mapping[int, ExpertsLayout] | None = None
) -> tuple[Tensor, bool]:
    """(expert's down-projection weight, transposed): [d, d_ff] with neuron i in column i, or [d_ff, d] with it in
    row i (gpt-oss). Writing into it changes the model. `layouts`: `experts_by_layer(model)`, where the caller has
    it."""
    lay = (layouts or experts_by_layer(model))[layer]
    if expert == SHARED:
        if lay.shared is None:
            raise NeuronlabError(f"layer {layer} has no shared expert")
        down: Any = decoder_layers(model)[layer].get_submodule(f"{lay.shared}.down_proj")
        return down.weight, False
    module: Any = decoder_layers(model)[layer].get_submodule(lay.path)
    if lay.names is not None:
        return getattr(module[expert], lay.names[2]).weight, False
    return module.down_proj[expert], bool(lay.scaled or module.is_transposed)
