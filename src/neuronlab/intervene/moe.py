"""Changing expert neurons of a mixture of experts: on the fly, or written into the experts' weights.

    found = nl.moe_lape(stats, over="neurons")["languages"]["fr"]     # {layer: [[expert, neuron], ...]}
    with nl.expert_neurons(model, expert_edit(found, "zero")):         # or "scale" / "set" / "add" with a value
        model.generate(**batch)
    bake_expert_neurons(model, found, scale=0.0)                       # the same, in the down projections
    bake_experts_to_folder(model, tok, "neurons.json", "fr", "no-fr/")   # `neuronlab moe bake`

A neuron's value is changed on the tokens routed to its expert only (the others never compute it). `zero` and
`scale` act on h only through its column of the expert's down projection, so `bake_expert_neurons` writes them into
that column and the model needs no hooks (baked equals hooked; tested). `set` and `add` put a value where the
neuron had another, which no weight of the down projection can hold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from neuronlab.errors import NeuronlabError
from neuronlab.io import atomic_folder, check_writable
from neuronlab.models.moe import SHARED, NeuronFn, down_weight, experts_by_layer
from neuronlab.select.moe import read_moe_lape

MODES = ("zero", "scale", "set", "add")
ExpertNeurons = Mapping[int, Sequence[Sequence[int]]]  # {layer: [[expert, neuron], ...]}


def _by_expert(neurons: ExpertNeurons) -> dict[tuple[int, int], list[int]]:
    out: dict[tuple[int, int], list[int]] = {}
    for layer, pairs in neurons.items():
        for expert, neuron in pairs:
            out.setdefault((int(layer), int(expert)), []).append(int(neuron))
    return out


def expert_edit(neurons: ExpertNeurons, mode: str = "zero", value: float = 0.0) -> NeuronFn:
    """The function for `expert_neurons` that changes `neurons` ({layer: [[expert, neuron], ...]}, as `moe_lape`
    finds them; layer keys may be strings, as JSON has them): zero, scale by `value`, set to `value` or add it.
    Expert `SHARED` (-1) is the layer's shared expert: `expert_neurons` then shows it the shared neurons too."""
    if mode not in MODES:
        raise NeuronlabError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    chosen = {k: torch.tensor(v) for k, v in _by_expert(neurons).items()}

    def edit(layer: int, expert: int, tokens: Tensor, weights: Tensor, h: Tensor) -> Tensor | None:
        idx = chosen.get((layer, expert))
        if idx is None:
            return None
        h = h.clone()
        idx = idx.to(h.device)
        if mode == "zero":
            h[:, idx] = 0
        elif mode == "scale":
            h[:, idx] *= value
        elif mode == "set":
            h[:, idx] = value
        else:
            h[:, idx] += value
        return h

    edit.shared = any(expert == SHARED for _, expert in chosen)  # type: ignore[attr-defined]  # expert_neurons reads it
    return edit


def bake_expert_neurons(model: nn.Module, neurons: ExpertNeurons, scale: float = 0.0) -> nn.Module:
    """Scale (0: zero) each of `neurons` in its expert's down projection, in place; returns the model."""
    layouts = experts_by_layer(model)
    with torch.no_grad():
        for (layer, expert), idx in _by_expert(neurons).items():
            if layer not in layouts:
                raise NeuronlabError(f"layer {layer} has no experts (MoE layers: {sorted(layouts)})")
            lay = layouts[layer]
            if expert == SHARED and lay.shared is not None:
                if not all(0 <= i < lay.shared_d_ff for i in idx):
                    raise NeuronlabError(f"layer {layer}'s shared expert has {lay.shared_d_ff} neurons: {idx}")
            elif not 0 <= expert < lay.experts or not all(0 <= i < lay.d_ff for i in idx):
                raise NeuronlabError(f"layer {layer} has {lay.experts} experts of {lay.d_ff} neurons: {expert}, {idx}")
            down, transposed = down_weight(model, layer, expert, layouts)
            if transposed:
                down[idx] *= scale
            else:
                down[:, idx] *= scale
    return model


def bake_experts_to_folder(
    model: Any, tokenizer, found: str | Path, language: str, out: str | Path, scale: float = 0.0
) -> dict[str, Any]:
    """Bake the expert neurons `moe_lape` found for `language` (its JSON file `found`) into `model` scaled by
    `scale`, and save model and tokenizer as a plain checkpoint folder `out` (written whole, or not at all); what
    `neuronlab moe bake` runs. Returns {layer: [[expert, neuron], ...]} that were baked."""
    check_writable(out, folder=True)
    languages = read_moe_lape(found, "neurons")
    if language not in languages:
        raise NeuronlabError(f"{found} has no language {language!r}: it has {', '.join(languages)}")
    neurons = languages[language]
    bake_expert_neurons(model, neurons, scale)
    atomic_folder(out, lambda tmp: (model.save_pretrained(tmp), tokenizer.save_pretrained(tmp)))
    return neurons
