"""bake: write a Plan into weights, for a plain Hugging Face checkpoint any serving engine can run.

    baked = nl.bake(model, nl.Plan([nl.Scale(factor=2.0, neurons=ns)]))   # `model` is left untouched
    baked.save_pretrained("out/")

Scaling (or zeroing) neuron j at `act` or `neuron` at every position multiplies what it sends through the
down projection, so it equals scaling column j of that projection's weight (row j for GPT-2's Conv1D).
Anything else (Set to a non-zero value, Add, other sites, chosen positions) depends on the input and
cannot be baked: bake refuses it and says so.
"""

from __future__ import annotations

import copy
from typing import cast

import torch
from torch import Tensor, nn

from neuronlab.errors import NeuronlabError
from neuronlab.intervene.apply import compile_plan
from neuronlab.intervene.plan import Plan, Scale, Set, Zero
from neuronlab.models.resolve import arch_spec
from neuronlab.models.sites import NEURON_KINDS, decoder_layers, get_module


def _factor(iv, value: float | torch.Tensor = 1.0) -> float | torch.Tensor:
    """The multiplier a neuron intervention applies: for Scale its compiled value (a number, or per neuron)."""
    if isinstance(iv, Scale):
        return value
    if isinstance(iv, Zero) or (isinstance(iv, Set) and isinstance(iv.value, (int, float)) and iv.value == 0):
        return 0.0
    raise NeuronlabError(
        f"bake cannot express {type(iv).__name__}: only Scale, Zero and Set(value=0) on neurons can be written "
        "into weights; use `with nl.apply(model, plan):` for this plan"
    )


def bake(model: nn.Module, plan: Plan) -> nn.Module:
    """A copy of `model` whose plain forward equals `model` under `apply(model, plan)`."""
    for iv in plan:
        _factor(iv)
        if iv.site not in NEURON_KINDS:
            raise NeuronlabError(f"bake cannot express an intervention on site {iv.site!r}: only act and neuron")
        if not (isinstance(iv.positions, str) and iv.positions == "all"):
            raise NeuronlabError("bake cannot express interventions on chosen positions: use positions='all'")
    if any(p.device.type == "meta" for p in model.parameters()):
        raise NeuronlabError(
            "this model's weights are offloaded (device_map with cpu/disk, accelerate offload): bake "
            "writes into the weights, so load the model whole (e.g. on the CPU) to bake it, then "
            "serve the saved checkpoint"
        )
    compiled = compile_plan(model, plan)
    spec = arch_spec(model)
    baked = copy.deepcopy(model)
    layers = decoder_layers(baked)
    if spec.down is None:
        raise NeuronlabError("bake writes into the FFN down projection, and this model has none (a mixture of experts)")
    with torch.no_grad():
        for site, edits in compiled.items():
            w = cast(Tensor, get_module(layers[site.layer], spec.down).weight)
            d_ff = w.shape[0] if spec.conv1d else w.shape[1]
            scale = torch.ones(d_ff, dtype=torch.float32, device=w.device)
            for iv, idx, value in edits:
                iv.per_position(value)  # a per-position factor needs chosen positions: refused above
                factor = _factor(iv, value)
                factor = factor.to(scale) if isinstance(factor, torch.Tensor) else factor
                if idx is None:
                    scale *= factor
                else:
                    scale[idx] *= factor
            w.copy_(w * (scale[:, None] if spec.conv1d else scale[None, :]).to(w.dtype))
    return baked
