"""Proving a mixture of experts' neurons on a probe forward (`models/moe.py` serves them).

    layouts = check_experts(model)      # {layer: ExpertsLayout}, with adds_up; raises, naming the family, where not

1. The logits through neuronlab's loop equal the model's own (whatever experts implementation it selected).
2. A neuron zeroed there equals its column (gpt-oss, Llama 4: row) of the expert's down projection removed.
3. The first MoE layer's block output is its routed experts' output plus its shared expert's, gated where the block
   gates it (`adds_up`, reported, not required: a norm after the experts breaks it but not 1 and 2), and a zeroed
   shared neuron equals its down column removed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from neuronlab.errors import NeuronlabError
from neuronlab.models.moe import SHARED, ExpertsLayout, down_weight, expert_neurons, experts_by_layer
from neuronlab.models.resolve import arch_spec
from neuronlab.models.verify import capture


def check_experts(model: Any, input_ids: Tensor | None = None, atol: float = 1e-5) -> dict[int, ExpertsLayout]:
    """Prove the loop on a probe forward (module doc): logits through it equal the model's own, and zeroing
    neuron 0 of the first expert used in the first MoE layer equals removing its column of the down projection.
    Returns the layouts; raises, naming the model type, where either fails."""
    layouts = experts_by_layer(model)
    if input_ids is None:
        input_ids = torch.arange(1, 13, device=next(model.parameters()).device).remainder(model.config.vocab_size)[None]
    name = getattr(model.config, "model_type", type(model).__name__)
    with torch.no_grad():
        own = model(input_ids=input_ids).logits
        with expert_neurons(model):
            ours = model(input_ids=input_ids).logits
        if not torch.allclose(own, ours, atol=atol, rtol=1e-4):
            raise NeuronlabError(
                f"{name}: its experts do not compute as transformers' eager loop does (logits differ by "
                f"{(own - ours).abs().max():.3g}); its expert neurons are not served"
            )
        layer = min(layouts)
        seen: list[int] = []

        def zero(i: int, e: int, tokens: Tensor, weights: Tensor, h: Tensor) -> Tensor | None:
            if i != layer or (seen and seen[0] != e):
                return None
            seen.append(e)
            h = h.clone()
            h[:, 0] = 0
            return h

        with expert_neurons(model, zero):
            zeroed = model(input_ids=input_ids).logits
    removed = _without_neuron_0(model, layer, seen[0], layouts, input_ids)
    if not torch.allclose(zeroed, removed, atol=atol, rtol=1e-4):
        raise NeuronlabError(f"{name}: a zeroed expert neuron is not its down-projection column removed")
    adds_up = _check_block(model, layouts, input_ids, name, atol)
    return {i: replace(lay, adds_up=adds_up) for i, lay in layouts.items()}


def _check_block(model: Any, layouts: Mapping[int, ExpertsLayout], input_ids: Tensor, name: str, atol: float):
    """Whether the first MoE layer's block output equals its experts' output (the routed experts' down projections,
    weighted by the router) plus its shared expert's (sigmoid-gated where the block gates it); None for lists of
    expert MLPs (transformers 4), which weight their outputs inside the block where no hook sees them. Raises where
    a zeroed shared neuron is not its down column removed."""
    layer = min(layouts)
    lay, root = layouts[layer], f"{arch_spec(model).layers}.{layer}"
    paths = {"block": lay.path.rpartition(".")[0], "experts": lay.path, "shared": lay.shared, "gate": lay.shared_gate}
    full = {k: f"{root}.{p}" if p else root for k, p in paths.items() if p is not None}
    with torch.no_grad(), expert_neurons(model), capture(model, full) as seen:  # copies: Llama 4 adds in place
        model(input_ids=input_ids)
    block = seen["block"].reshape(-1, seen["block"].shape[-1])
    shared = seen.get("shared", torch.zeros_like(block)).reshape(block.shape)
    if "gate" in seen:
        shared = torch.sigmoid(seen["gate"].reshape(-1, 1)) * shared
    adds_up = None
    if lay.names is None:
        routed = seen["experts"]
        routed = routed.view(lay.experts, -1, routed.shape[-1]).sum(0) if lay.scaled else routed
        adds_up = torch.allclose(block, routed.reshape(block.shape) + shared, atol=atol, rtol=1e-4)
    if lay.shared is None:
        return adds_up

    def zero(i: int, e: int, tokens: Tensor, weights: Tensor, h: Tensor) -> Tensor | None:
        return h.index_fill(-1, torch.tensor([0], device=h.device), 0.0) if (i, e) == (layer, SHARED) else None

    with torch.no_grad(), expert_neurons(model, zero, shared=True):
        zeroed = model(input_ids=input_ids).logits
    removed = _without_neuron_0(model, layer, SHARED, layouts, input_ids)
    if not torch.allclose(zeroed, removed, atol=atol, rtol=1e-4):
        raise NeuronlabError(f"{name}: a zeroed shared-expert neuron is not its down-projection column removed")
    return adds_up


def _without_neuron_0(
    model: Any, layer: int, expert: int, layouts: Mapping[int, ExpertsLayout], input_ids: Tensor
) -> Tensor:
    """The model's logits with neuron 0 of `expert` removed from its down projection (the weight restored after)."""
    down, transposed = down_weight(model, layer, expert, layouts)
    saved = down.clone()
    try:
        with torch.no_grad():
            (down[0] if transposed else down[:, 0]).zero_()
            return model(input_ids=input_ids).logits
    finally:
        with torch.no_grad():
            down.copy_(saved)
