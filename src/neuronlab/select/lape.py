"""Language-specific neurons from Stats: LAPE (Tang et al. 2024), the "language-activated" baseline, and
the per-neuron activation values the amplification paper (Rahmanisa et al. 2025) sets neurons to.

    stats = nl.record(model, tok, texts, site="act", pooled_texts=100)
    ns = nl.lape(stats, top_rate=0.01)              # NeuronSet: language -> layer -> neurons
    base = activated(stats, n_texts=100)
    p_max = activation_values(stats, "max")         # float64 [languages, layers, neurons]

All three are pure functions of the Stats.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from neuronlab.config import Config, configured, option
from neuronlab.errors import NeuronlabError
from neuronlab.record.stats import Stats
from neuronlab.select.neuron_set import NeuronSet


@dataclass(frozen=True)
class LapeConfig(Config):
    """The settings of `lape`, with the paper's defaults: `lape(stats, cfg)` or `lape(stats, top_rate=0.02)`."""

    top_rate: float = option(0.01, "share of all neurons kept (Tang et al.: 0.01 for 7B models)")
    filter_rate: float = option(0.95, "quantile a neuron's top activation probability must exceed")
    activation_bar_ratio: float = option(0.95, "quantile that assigns a kept neuron to a language")

    def check(self) -> None:
        for name in ("top_rate", "filter_rate", "activation_bar_ratio"):
            if not 0 < getattr(self, name) <= 1:
                raise NeuronlabError(f"{name} must be in (0, 1], got {getattr(self, name)}")


def _kth_smallest(values: Tensor, rates: tuple[float, ...]) -> list[float]:
    """Tang's quantiles: for each rate the k-th smallest value with k = round(n * rate), k at least 1 (one
    partial sort for all of them)."""
    import numpy as np

    n = values.numel()
    ks = [min(max(1, round(n * rate)), n) - 1 for rate in rates]
    part = np.partition(values.reshape(-1).numpy(), sorted(set(ks)))
    return [float(part[k]) for k in ks]


def _lowest(values: Tensor, k: int) -> Tensor:
    """Indices of the k smallest values, ties broken by lower index (a stable sort's first k, without the sort)."""
    if k == 0:
        return values.new_zeros(0, dtype=torch.long)
    bar = torch.topk(values, k, largest=False, sorted=True).values[-1]
    below = (values < bar).nonzero().flatten()
    at = (values == bar).nonzero().flatten()[: k - len(below)]
    return torch.cat([below, at])


def lape_entropy(stats: Stats | Tensor) -> Tensor:
    """LAPE's entropy of each neuron's activation probability over the groups, float64 [layers, neurons] (0 log 0 =
    0; a neuron that never fires gets 0 too, and `lape` filters it out). Takes Stats or the probabilities
    [groups, ...] themselves."""
    p = stats.probability if isinstance(stats, Stats) else stats
    normed = torch.nan_to_num(p / p.sum(0), nan=0.0)  # 0 / 0 where a neuron never fires
    return -torch.xlogy(normed, normed).sum(0)


def lape_select(p: Tensor, cfg: LapeConfig) -> tuple[list[Tensor], dict[str, float | int]]:
    """LAPE's steps 1-4 (see `lape`) on activation probabilities p [groups, units]: per group the flat indices of
    the kept units assigned to it, and the thresholds ({filter_value, activation_bar, selected})."""
    entropy = lape_entropy(p).flatten()
    q_filter, q_bar = _kth_smallest(p, (cfg.filter_rate, cfg.activation_bar_ratio))
    entropy[~(p > q_filter).any(0)] = float("inf")
    kept = _lowest(entropy, round(entropy.numel() * cfg.top_rate))
    kept = kept[torch.isfinite(entropy[kept])]
    chosen = [kept[p[g, kept] > q_bar] for g in range(p.shape[0])]
    return chosen, {"filter_value": q_filter, "activation_bar": q_bar, "selected": len(kept)}


def lape(stats: Stats, config: LapeConfig | None = None, **settings: float) -> NeuronSet:
    """Language activation probability entropy (Tang et al. 2024, arXiv 2402.16438), with the settings of `config`
    (a LapeConfig) or its fields as keywords (`top_rate=0.01`).

    For neuron i and language l, p[l,i] = (tokens where act > 0) / tokens of l, and p~[l,i] = p[l,i] / sum_l p.
    1. entropy[i] = -sum_l p~ log p~ (0 log 0 = 0); low entropy = fires for few languages.
    2. Filter: drop neuron i unless some p[l,i] > q_f, the k-th smallest of all p (every layer, neuron and
       language) with k = round(n * filter_rate).
    3. Keep the round(top_rate * neurons) neurons of lowest entropy among those left (ties: lower layer,
       then lower index, first).
    4. Assign each kept neuron to every language with p[l,i] > q_a, the k-th smallest of all p with
       k = round(n * activation_bar_ratio): one neuron can belong to several languages, or to none.

    Worked example: one layer, neurons a and b, languages en and fr, p = {en: [0.9, 0.5], fr: [0.1, 0.5]};
    n = 4 values sorted 0.1 0.5 0.5 0.9. With filter_rate = activation_bar_ratio = 0.5, k = 2 so
    q_f = q_a = 0.5. Entropy: a = -(0.9 ln 0.9 + 0.1 ln 0.1) = 0.325, b = ln 2 = 0.693. Filter: a has
    0.9 > 0.5, b has no p > 0.5 and is dropped. With top_rate = 0.5, round(0.5 * 2) = 1 neuron: a. It goes to
    en (0.9 > 0.5) and not to fr: the result is {en: {0: [a]}, fr: {}}.
    """
    cfg = configured(LapeConfig, config, settings, "lape")
    top_rate, filter_rate, activation_bar_ratio = cfg.top_rate, cfg.filter_rate, cfg.activation_bar_ratio
    if len(stats.groups) < 2:
        raise NeuronlabError("LAPE compares languages: record at least two groups")
    chosen, found = lape_select(stats.probability.flatten(1), cfg)  # [languages, layers * neurons]
    width = stats.width
    neurons: dict[str, dict[int, list[int]]] = {}
    for lang, flat in zip(stats.groups, chosen, strict=True):
        neurons[lang] = {
            layer: (flat[flat // width == layer] % width).tolist() for layer in (flat // width).unique().tolist()
        }
    meta = {
        "method": "lape",
        "site": stats.site,
        "model": stats.meta.get("model", {}),
        "top_rate": top_rate,
        "filter_rate": filter_rate,
        "activation_bar_ratio": activation_bar_ratio,
        **found,
        "tokens": dict(zip(stats.groups, stats.tokens.tolist(), strict=True)),
    }
    return NeuronSet(neurons, meta)


def _pooled(stats: Stats, n_texts: int) -> list[Tensor]:
    """Per group, the pooled per-text means of its first n texts: [texts, layers, neurons]."""
    if stats.pooled_mean is None or stats.pooled_n is None:
        raise NeuronlabError("these stats keep no per-text values: record them with pooled_texts=N")
    out = []
    for g, group in enumerate(stats.groups):
        n = min(n_texts, int(stats.pooled_n[g]))
        if n == 0:
            raise NeuronlabError(f"group {group!r} has no pooled texts")
        out.append(stats.pooled_mean[g, :n].double())
    return out


def activated(stats: Stats, n_texts: int = 100) -> NeuronSet:
    """Baseline: a neuron belongs to language L when its mean activation over each text is > 0 for every one
    of the first `n_texts` texts of L."""
    neurons = {}
    for group, means in zip(stats.groups, _pooled(stats, n_texts), strict=True):
        on = (means > 0).all(0)  # [layers, neurons]
        neurons[group] = {layer: on[layer].nonzero().flatten().tolist() for layer in range(on.shape[0])}
    meta = {"method": "activated", "site": stats.site, "model": stats.meta.get("model", {}), "n_texts": n_texts}
    return NeuronSet(neurons, meta)


def activation_values(stats: Stats, reduce: str = "max", n_texts: int = 100) -> Tensor:
    """p_max or p_median: the max or median over the first `n_texts` texts of each neuron's per-text mean
    activation, float64 [groups, layers, neurons]. The median of an even count averages the middle two."""
    if reduce not in ("max", "median"):
        raise NeuronlabError(f"reduce must be 'max' or 'median', not {reduce!r}")
    pooled = _pooled(stats, n_texts)
    if reduce == "max":
        return torch.stack([m.amax(0) for m in pooled])
    medians = []
    for m in pooled:
        s = m.sort(0).values
        medians.append((s[(len(s) - 1) // 2] + s[len(s) // 2]) / 2)
    return torch.stack(medians)
