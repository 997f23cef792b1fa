"""The `neuronlab find` commands as library calls: each checks where it writes, reads its inputs, selects the
neurons and saves them (and loads a model, a (model, tokenizer) pair or a function that loads one, only then).

    ns = nl.run_lape("stats.safetensors", "lape.json", top_rate=0.02)                        # find lape
    ns = nl.run_activated("stats.safetensors", "activated.json", n_texts=100)                # find activated
    attr, ns = nl.run_attribution((model, tok), texts, "attr.json", like="lape.json", method="ig")   # attribution
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from neuronlab.io import check_writable
from neuronlab.models.load import ModelSource, loaded
from neuronlab.record.stats import Stats
from neuronlab.select.attribution import Attribution, AttributionConfig, attribute, attribution_neurons
from neuronlab.select.lape import LapeConfig, activated, lape
from neuronlab.select.neuron_set import NeuronSet


def run_lape(stats: str | Path, out: str | Path, config: LapeConfig | None = None, **settings: Any) -> NeuronSet:
    """ns = run_lape("stats.safetensors", "lape.json", LapeConfig(top_rate=0.02))

    `neuronlab find lape`: `lape` on a stats file, the NeuronSet saved to `out` and returned."""
    check_writable(out)
    ns = lape(Stats.load(stats), config, **settings)
    ns.save(out)
    return ns


def run_activated(stats: str | Path, out: str | Path, n_texts: int = 100) -> NeuronSet:
    """ns = run_activated("stats.safetensors", "activated.json", n_texts=100)

    `neuronlab find activated`: the `activated` baseline on a stats file (recorded with pooled texts), saved to
    `out` and returned."""
    check_writable(out)
    ns = activated(Stats.load(stats), n_texts)
    ns.save(out)
    return ns


def run_attribution(
    model: ModelSource,
    texts: Mapping[str, Sequence[str]],
    out: str | Path,
    config: AttributionConfig | None = None,
    per_group: int | None = None,
    like: str | Path | None = None,
    specific: bool = True,
    stats: str | Path | None = None,
    scores: str | Path | None = None,
    **settings: Any,
) -> tuple[Attribution, NeuronSet]:
    """attr, ns = run_attribution((model, tok), {"en": en, "fr": fr}, "attr.json", per_group=50, method="ig")

    `neuronlab find attribution`: `attribute` each group of `texts` (a stats file gives the mean baseline), the
    scores saved to `scores`; the top neurons of each group (`per_group`, or as many as the set `like` holds:
    `attribution_neurons`) saved to `out`. Returns both."""
    check_writable(out, scores)
    counts = None if like is None else NeuronSet.load(like)
    recorded = None if stats is None else Stats.load(stats)
    loaded_model, tok = loaded(model)
    attr = attribute(loaded_model, tok, texts, config, stats=recorded, **settings)
    if scores is not None:
        attr.save(scores)
    ns = attribution_neurons(attr, per_group, counts, specific)
    ns.save(out)
    return attr, ns
