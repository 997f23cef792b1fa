"""Steering plans for a target language's neurons: the variants of the amplification paper
(Rahmanisa et al. 2025, arXiv 2507.22581), at every layer and position unless told otherwise.

    >>> plan = steering_plan(ns, "fr", "p_max", stats=stats)       # set fr's neurons to their p_max
    >>> plan = steering_plan(ns, "fr", "scale", factor=4.0)
    >>> plan = steering_plan(ns, "fr", "zero")                     # deactivate

Variants:
- "p_max", "p_median": set each neuron to the max / median over the first texts of the target language of
  its per-text mean activation (needs Stats recorded with pooled_texts);
- "zero": set to 0 (deactivate); "scale": multiply by `factor`;
- "p10", "layer_max": set to the layer's 10th percentile / max at the same token, on the current input;
  "add_layer_max": add the layer's max.

On a gated FFN (Llama, Qwen, Gemma, Mistral: act = f(gate) times up) the `act` site is the gate: setting it to
a value leaves the sign of the neuron's output to the up projection of the running text. On a 4-layer FLORES
model this made p_max amplification move generations for 5 of 14 targets (Llama) against 14 of 14 with a
plain ReLU FFN of the same size (tests/demo). "scale" keeps each token's own sign (it multiplies gate and
output alike).
"""

from __future__ import annotations

from collections.abc import Sequence

from neuronlab.errors import NeuronlabError
from neuronlab.intervene.plan import LayerStat, Plan, Positions, Scale, Set, Zero
from neuronlab.models.load import require_same_model
from neuronlab.record.stats import Stats
from neuronlab.select.lape import activation_values
from neuronlab.select.neuron_set import NeuronSet

VARIANTS = ("p_max", "p_median", "zero", "scale", "p10", "layer_max", "add_layer_max")


def steering_plan(
    neurons: NeuronSet,
    target: str,
    variant: str,
    stats: Stats | None = None,
    factor: float = 2.0,
    layers: Sequence[int] | None = None,
    positions: Positions = "all",
    n_texts: int = 100,
) -> Plan:
    """One intervention on `target`'s neurons (see module doc); `layers` restricts it to those layers."""
    if variant not in VARIANTS:
        raise NeuronlabError(f"unknown steering variant {variant!r}: use one of {', '.join(VARIANTS)}")
    chosen = neurons.subset([target])
    site = neurons.meta.get("site", "act")
    if stats is not None:
        if stats.site != site:
            raise NeuronlabError(
                f"the stats were recorded at site {stats.site} but the neurons index site {site}: "
                "record the stats at the neuron set's site"
            )
        require_same_model(neurons.meta.get("model"), stats.meta.get("model", {}), "the neuron set and the stats")
    common = dict(site=site, neurons=chosen, layers=layers, positions=positions)
    if variant in ("p_max", "p_median"):
        if stats is None:
            raise NeuronlabError(f"variant {variant} needs the Stats (recorded with pooled_texts) for its values")
        values = activation_values(stats, variant[2:], n_texts)[stats.index(target)]  # [layers, neurons]
        per_layer = {layer: values[layer, idx].float() for layer, idx in chosen[target].items()}
        return Plan([Set(value=per_layer, **common)])
    if variant == "zero":
        return Plan([Zero(**common)])
    if variant == "scale":
        return Plan([Scale(factor=factor, **common)])
    if variant == "p10":
        return Plan([LayerStat(stat="p10", **common)])
    return Plan([LayerStat(stat="max", mode="add" if variant == "add_layer_max" else "set", **common)])


def expert_plan(expertise, concept: str, k: int | None = 50, mode: str = "force", positions: Positions = "all") -> Plan:
    """Steer with a concept's experts. "force": set the k neurons of highest AP to their on_p50, the median response
    to the concept's sentences (Suau et al.), to make the concept more likely. "zero": silence those k. "dampen"
    (AurA, Suau et al. 2024): multiply every neuron with AUROC > 0.5 (the k highest, or all with k=None) by
    alpha = 1 - 2 (AUROC - 0.5), to make the concept less likely; it bakes into weights. The site and neurons come
    from the Expertise, so the plan fits the model it was made on."""
    if mode not in ("force", "zero", "dampen"):
        raise NeuronlabError(f"mode must be 'force', 'zero' or 'dampen', not {mode!r}")
    c = expertise.index(concept)
    if mode == "dampen":
        auroc = expertise["auroc"][c]
        n = int((auroc > 0.5).sum())
        top = expertise.top(concept, n if k is None else min(k, n), "auroc") if n else []
    else:
        top = expertise.top(concept, k or 50)
    per: dict[int, list[int]] = {}
    for layer, neuron, _value in top:
        per.setdefault(layer, []).append(neuron)
    per = {layer: sorted(idx) for layer, idx in per.items()}
    site = expertise.meta.get("site", "act")
    ns = NeuronSet({concept: per}, {"method": "experts", "site": site, "model": expertise.meta.get("model", {})})
    common = dict(site=site, neurons=ns, positions=positions)
    if mode == "zero":
        return Plan([Zero(**common)])
    if mode == "dampen":
        alpha = 1 - 2 * (expertise["auroc"][c] - 0.5)
        return Plan([Scale(factor={layer: alpha[layer, idx].float() for layer, idx in per.items()}, **common)])
    on = expertise["on_p50"][c]
    return Plan([Set(value={layer: on[layer, idx].float() for layer, idx in per.items()}, **common)])
