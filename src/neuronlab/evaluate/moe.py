"""Silencing a language's experts and measuring every language's perplexity: the deactivation matrix of a mixture
of experts (Tang et al. 2024's experiment, with experts in place of neurons).

    found = nl.moe_lape(stats, over="experts")["languages"]                # {language: {layer: [expert, ...]}}
    matrix = expert_perplexity_matrix(model, tok, held_out, found)        # {"baseline", "steered", "change"}

A silenced expert adds nothing where the router chose it; the token's other chosen experts keep their weights
(`models/moe.py`, `skip`), so the change is exactly that expert's contribution taken away (tested against the
model with the expert's down projection zeroed). With `how="forbid"` the router never chooses the experts and picks
others in their place (`intervene/routing.py`): what the model does without them, rather than with a hole.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from neuronlab.errors import NeuronlabError
from neuronlab.evaluate.steering import changed_perplexity
from neuronlab.io import check_writable, write_json
from neuronlab.models.moe import expert_neurons
from neuronlab.select.moe import read_moe_lape

Experts = Mapping[str, Mapping[Any, Sequence[int]]]  # {language: {layer: [expert, ...]}}
HOW = ("silence", "forbid")


def check_how(how: str) -> None:
    """One error for a way of taking experts away that is not silence or forbid."""
    if how not in HOW:
        raise NeuronlabError(f"unknown how {how!r}: use silence (weight 0) or forbid (the router picks others)")


def expert_perplexity_matrix(
    model,
    tokenizer,
    texts: Mapping[str, Sequence[str]],
    experts: Experts,
    batch_size: int = 8,
    max_length: int = 512,
    progress: bool = True,
    how: str = "silence",
) -> dict:
    """Perplexity of every language's `texts` with each language's `experts` silenced (or, `how="forbid"`, never
    chosen by the router), as `perplexity_matrix` gives it (targets: the languages with at least one expert)."""
    from neuronlab.intervene.routing import route

    targets = [t for t, layers in experts.items() if any(layers.values())]
    if not targets:
        raise NeuronlabError("no language has an expert to silence: find them with moe_lape(stats, over='experts')")
    check_how(how)

    def within(t: str):
        if how == "forbid":
            return route(model, {int(layer): dict.fromkeys(es, "forbid") for layer, es in experts[t].items() if es})
        return expert_neurons(model, skip=experts[t])

    return changed_perplexity(model, tokenizer, texts, targets, within, batch_size, max_length, progress=progress)


def expert_deactivation_to_file(
    model, tokenizer, found: str | Path, texts: Mapping[str, Sequence[str]], out: str | Path, **settings: Any
) -> dict:
    """The matrix for the experts in `found` (a `moe_lape --over experts` JSON file), written to `out` (what
    `neuronlab moe deactivate` runs)."""
    check_writable(out)
    experts = read_moe_lape(found, "experts")
    matrix = expert_perplexity_matrix(model, tokenizer, texts, experts, **settings)
    write_json(out, {"experts": experts, "how": settings.get("how", "silence"), **matrix})
    return matrix
