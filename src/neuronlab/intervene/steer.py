"""Steering plans for a target language's neurons: the variants of the amplification paper
(Rahmanisa et al. 2025, arXiv 2507.22581), at every layer and position unless told otherwise.

    plan = steering_plan(ns, "fr", "p_max", stats=stats)       # set fr's neurons to their p_max
    plan = steering_plan(ns, "fr", "scale", factor=4.0)
    plan = steering_plan(ns, "fr", "zero")                     # deactivate

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
output alike). Each variant is a function in the VARIANTS registry; `@VARIANTS.register("name")` adds one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from neuronlab.errors import NeuronlabError
from neuronlab.intervene.plan import Intervention, LayerStat, Plan, Positions, Scale, Set, Zero
from neuronlab.models.load import require_same_model
from neuronlab.record.stats import Stats
from neuronlab.registry import Registry
from neuronlab.select.lape import activation_values
from neuronlab.select.neuron_set import NeuronSet


@dataclass(frozen=True)
class Target:
    """What a variant needs: the target's neurons, the stats and the settings of `steering_plan`."""

    name: str
    neurons: NeuronSet
    stats: Stats | None
    factor: float
    n_texts: int
    where: dict  # site, neurons, layers, positions: the same for every variant


VARIANTS: Registry[Callable[[Target], Intervention]] = Registry("steering variant")


def _pooled(statistic: str) -> Callable[[Target], Intervention]:
    def variant(t: Target) -> Intervention:
        if t.stats is None:
            raise NeuronlabError(f"variant p_{statistic} needs the Stats (recorded with pooled_texts) for its values")
        values = activation_values(t.stats, statistic, t.n_texts)[t.stats.index(t.name)]  # [layers, neurons]
        return Set(value={layer: values[layer, idx].float() for layer, idx in t.neurons[t.name].items()}, **t.where)

    return variant


VARIANTS.add("p_max", _pooled("max"))
VARIANTS.add("p_median", _pooled("median"))
VARIANTS.add("zero", lambda t: Zero(**t.where))
VARIANTS.add("scale", lambda t: Scale(factor=t.factor, **t.where))
VARIANTS.add("p10", lambda t: LayerStat(stat="p10", **t.where))
VARIANTS.add("layer_max", lambda t: LayerStat(stat="max", mode="set", **t.where))
VARIANTS.add("add_layer_max", lambda t: LayerStat(stat="max", mode="add", **t.where))


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
    make = VARIANTS[variant]  # an unknown name: one error listing the variants
    chosen = neurons.subset([target])
    site = neurons.meta.get("site", "act")
    if stats is not None:
        if stats.site != site:
            raise NeuronlabError(
                f"the stats were recorded at site {stats.site} but the neurons index site {site}: "
                "record the stats at the neuron set's site"
            )
        require_same_model(neurons.meta.get("model"), stats.meta.get("model", {}), "the neuron set and the stats")
    where = dict(site=site, neurons=chosen, layers=layers, positions=positions)
    return Plan([make(Target(target, chosen, stats, factor, n_texts, where))])


def target_plans(
    model,
    neurons: NeuronSet,
    targets: Sequence[str] | None = None,
    variant: str = "p_max",
    stats: Stats | None = None,
    factor: float = 2.0,
) -> dict[str, Plan]:
    """One steering plan per target (default: every group of `neurons`), after checking the neuron set and the
    stats against `model` and every target against the set."""
    neurons.validate(model)
    if stats is not None:
        stats.check_model(model)
    chosen = list(targets or neurons.groups)
    for t in chosen:
        neurons[t]  # a clear error for a target the set does not have
    return {t: steering_plan(neurons, t, variant, stats=stats, factor=factor) for t in chosen}


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
