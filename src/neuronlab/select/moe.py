"""Language-specific experts and expert neurons of a mixture of experts: LAPE (Tang et al. 2024) over the
routing frequency of each expert, or over the firing rate of each expert's neurons.

    stats = record_experts(model, tok, {"en": en, "fr": fr})
    found = moe_lape(stats, over="experts")                  # {"languages": {"fr": {layer: [expert, ...]}}, ...}
    found = moe_lape(stats, over="neurons", top_rate=0.01)   # {"languages": {"fr": {layer: [[expert, neuron], ...]}}}

Over experts, p[language, layer, expert] = routed / tokens: how often the router picks the expert for the
language's tokens. Over neurons, p = active / routed by default (`routed=True`: the rate given that the token reached
the neuron's expert, so a neuron is judged on the tokens it sees) or active / tokens (`routed=False`: the rate over
all tokens, which mixes in how often the expert is chosen). A shared expert's neurons (expert SHARED, -1), which
every token reaches, are candidates beside them with their rate over all tokens. Either way LAPE's entropy, filter,
top rate and bar apply unchanged (`select/lape.py`); the result states which rate it used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch

from neuronlab.config import configured
from neuronlab.errors import NeuronlabError
from neuronlab.io import check_writable, read_json, write_json
from neuronlab.models.moe import SHARED
from neuronlab.record.expert_stats import ExpertStats
from neuronlab.select.lape import LapeConfig, lape_select


def moe_lape(
    stats: ExpertStats,
    over: Literal["experts", "neurons"] = "neurons",
    routed: bool = True,
    config: LapeConfig | None = None,
    **settings: float,
) -> dict[str, Any]:
    """Language-specific experts or expert neurons (module doc): {"languages": {group: {layer: [...]}}, "over",
    "rate", the LAPE settings and thresholds}."""
    cfg = configured(LapeConfig, config, settings, "moe_lape")
    if over not in ("experts", "neurons"):
        raise NeuronlabError(f"over must be 'experts' or 'neurons', not {over!r}")
    if len(stats.groups) < 2:
        raise NeuronlabError("LAPE compares languages: record at least two groups")
    p = stats.usage() if over == "experts" else stats.probability(routed)
    shape = p.shape[1:]  # [layers, experts] or [layers, experts, d_ff]
    per_layer, routed_units = shape[1:].numel(), p[0].numel()
    units = p.flatten(1)
    if over == "neurons" and stats.shared_d_ff:  # the shared neurons after the routed ones
        units = torch.cat([units, stats.shared_probability().flatten(1)], dim=1)
    chosen, found = lape_select(units, cfg)
    languages: dict[str, dict[int, list]] = {}
    for group, flat in zip(stats.groups, chosen, strict=True):
        layers: dict[int, list] = {}
        for i in sorted(flat.tolist()):
            if i >= routed_units:
                layer, unit = divmod(i - routed_units, stats.shared_d_ff)
                layers.setdefault(stats.layers[layer], []).append([SHARED, unit])
                continue
            unit = i % per_layer
            layers.setdefault(stats.layers[i // per_layer], []).append(
                unit if over == "experts" else [unit // shape[2], unit % shape[2]]
            )
        languages[group] = layers
    rate = "routed / tokens" if over == "experts" else "active / routed" if routed else "active / tokens"
    return {
        "method": "lape",
        "over": over,
        "rate": rate,
        "languages": languages,
        **{k: getattr(cfg, k) for k in ("top_rate", "filter_rate", "activation_bar_ratio")},
        **found,
        "model": stats.meta.get("model", {}),
    }


def moe_lape_to_file(
    stats: str | Path,
    out: str | Path,
    over: Literal["experts", "neurons"] = "neurons",
    routed: bool = True,
    config: LapeConfig | None = None,
) -> dict[str, Any]:
    """`moe_lape` on a stored ExpertStats file, written to `out` as JSON (what `neuronlab moe lape` runs)."""
    check_writable(out)
    found = moe_lape(ExpertStats.load(stats), over, routed, config)
    write_json(out, found)
    return found


def read_moe_lape(path: str | Path, over: Literal["experts", "neurons"]) -> dict[str, dict]:
    """{language: {layer: [...]}} of a `moe_lape_to_file` result, refused unless it lists `over`."""
    data = read_json(path, "moe_lape result")
    if data.get("over") != over:
        kind = {"experts": "experts", "neurons": "expert neurons"}
        raise NeuronlabError(
            f"{path} lists {kind.get(str(data.get('over')), 'something else')}, not {kind[over]}: run `neuronlab moe "
            f"lape --over {over}`"
        )
    return data["languages"]
