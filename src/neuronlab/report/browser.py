"""What the language pipeline (the demo and the language study) shows of single neurons: each language's most
specific LAPE neurons (for the report) and the neuron browser over LAPE's and attribution's neurons with the effect
of deactivating each set."""

from __future__ import annotations

from pathlib import Path

from neuronlab.models.naming import model_name
from neuronlab.report.viewer import write_view
from neuronlab.select.neuron_set import NeuronSet


def top_neurons(stats, ns: NeuronSet, per_language: int = 5) -> list[dict]:
    """Each language's LAPE neurons of lowest entropy, with their activation probability there and elsewhere."""
    from neuronlab.select.lape import lape_entropy

    entropy, p = lape_entropy(stats), stats.probability
    rows = []
    for g, lang in enumerate(stats.groups):
        pairs = sorted(ns.pairs(lang), key=lambda li: (float(entropy[li]), li))
        for layer, i in pairs[:per_language]:
            others = [float(p[j, layer, i]) for j in range(len(stats.groups)) if j != g]
            rows.append(
                {
                    "language": lang,
                    "layer": layer,
                    "neuron": i,
                    "entropy": float(entropy[layer, i]),
                    "p_language": float(p[g, layer, i]),
                    "p_other_max": max(others),
                }
            )
    return rows


def write_browser(stats, ns: NeuronSet, results: dict, out: Path) -> None:
    """The neuron browser over LAPE's neurons (and the attribution neurons, as "L (attribution)")."""
    sets, effects = dict(ns.neurons), dict(results["perplexity_deactivate"]["change"])
    compared = results.get("attribution")
    if compared is not None:
        found = NeuronSet.load(out.parent / "attribution_neurons.json")
        sets.update({f"{t} (attribution)": found[t] for t in found.groups})
        effects.update({f"{t} (attribution)": c for t, c in compared["perplexity_deactivate"]["change"].items()})
    both = NeuronSet(sets, {**ns.meta, "method": "LAPE and attribution"})
    title = f"neurons of {model_name(results['model'], 'the model')} (LAPE and attribution)"
    write_view(stats, out, both, effects=effects, limit=10_000, title=title)
