"""Attribution: the neurons a group's (a language's) next-token log-likelihood leans on, found with gradients
rather than by how often they fire (LAPE).

    attr = nl.attribute(model, tok, {"en": en, "fr": fr})                         # gradient x activation
    attr = nl.attribute(model, tok, texts, method="ig", steps=16, baseline="mean", stats=stats)
    ns = attribution_neurons(attr, per_group=100)             # a NeuronSet, used like lape's
    ns = attribution_neurons(attr, counts=lape_set)           # as many neurons per group as another set

The objective of group G is f = the sum over G's texts of log P(token | tokens before), over the tokens perplexity
scores (each window predicts its tokens 1..; padding never counts). With a the neuron's activation at a position
and b its baseline (0, or its mean over a stats file's tokens, `baseline="mean"`):
- `gxa` (gradient x activation, as in attribution patching): (a - b) * df/da, the first-order estimate of what
  moving the neuron to b costs f; all layers in one forward and one backward a batch.
- `ig` (Integrated Gradients, Sundararajan et al. 2017), layer by layer: that layer's activations move along
  b + alpha (a - b), alpha at the midpoints of `steps` equal intervals, the rest of the model computing as usual;
  (a - b) * the mean of df/dz over alpha. Completeness: per layer the scores sum to f(a) - f(layer at b), up to
  the midpoint rule's error (it falls as 1/steps^2). Costs `steps` forwards and backwards a batch a layer.
Scores are summed over positions and texts (Attribution.scores, float64 [groups, layers, neurons]); > 0 means
the neuron, as it fires, raises the group's likelihood. Under torch.distributed each rank scores its share.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from neuronlab.artifacts import register_artifact
from neuronlab.config import Config, configured, option
from neuronlab.data.batching import batches, pad_id, windows
from neuronlab.data.scoring import scored_tokens, token_nll
from neuronlab.dist import Shard, all_reduce, world
from neuronlab.errors import NeuronlabError
from neuronlab.io import read_safetensors, write_safetensors
from neuronlab.models.load import model_info
from neuronlab.models.sites import Site, SiteKind, check_layers, decoder_layers, hooked, site_width
from neuronlab.progress import progress_bar
from neuronlab.select.neuron_set import NeuronSet

FORMAT = "neuronlab.attribution/1"
AttributionMethod = Literal["gxa", "ig"]
METHODS: tuple[str, ...] = get_args(AttributionMethod)


@dataclass(frozen=True)
class AttributionConfig(Config):
    """The settings of `attribute` (besides model, texts and stats)."""

    method: AttributionMethod = option(
        "gxa", "gxa: gradient x activation (one backward a batch); ig: integrated gradients"
    )
    steps: int = option(16, "ig: points on the path from the baseline (midpoint rule)")
    baseline: Literal["zero", "mean"] = option("zero", "zero, or mean: each neuron's mean over the --stats tokens")
    site: SiteKind = option("act", "site kind whose neurons are scored")
    batch_size: int = option(8, "rows per forward pass")
    max_length: int = option(512, "tokens per window; longer texts are split")

    def check(self) -> None:
        if self.site == "router":
            raise NeuronlabError("site 'router' cannot be attributed: use one of act, neuron, ffn_out, attn_out, resid")
        if self.steps < 1:
            raise NeuronlabError("steps must be at least 1")


@dataclass
class Attribution:
    groups: list[str]
    scores: Tensor  # float64 [groups, layers, width]: summed over the group's positions
    tokens: Tensor  # int64 [groups]: tokens scored (predicted) per group
    meta: dict = field(default_factory=dict)  # method, steps, baseline, site, model, settings

    @property
    def per_token(self) -> Tensor:
        """Scores divided by each group's scored tokens, float64 [groups, layers, width]."""
        return self.scores / self.tokens.clamp(min=1).double()[:, None, None]

    def save(self, path: str | Path) -> None:
        write_safetensors(
            path,
            {"scores": self.scores, "tokens": self.tokens},
            FORMAT,
            groups=json.dumps(self.groups),
            meta=json.dumps(self.meta),
        )

    @classmethod
    def load(cls, path: str | Path) -> Attribution:
        tensors, header = read_safetensors(path, FORMAT, "attribution")
        return cls(json.loads(header["groups"]), tensors["scores"], tensors["tokens"], json.loads(header["meta"]))

    def summary(self) -> str:
        m = self.meta
        lines = [
            f"attribution ({m.get('method')}, baseline {m.get('baseline')}"
            + (f", {m.get('steps')} steps" if m.get("method") == "ig" else "")
            + f") at site {m.get('site')}: {self.scores.shape[1]} layers x {self.scores.shape[2]} neurons"
        ]
        for g, name in enumerate(self.groups):
            best = self.per_token[g].flatten().topk(3)
            top = ", ".join(
                f"L{int(i) // self.scores.shape[2]}N{int(i) % self.scores.shape[2]} {float(v):.3g}"
                for v, i in zip(best.values, best.indices, strict=True)
            )
            lines.append(f"  {name}: {int(self.tokens[g])} tokens; highest per token: {top}")
        return "\n".join(lines)


def attribute(
    model,
    tokenizer,
    texts: Mapping[str, Sequence[str]],
    config: AttributionConfig | None = None,
    *,
    stats=None,
    layers: Sequence[int] | None = None,
    progress: bool = True,
    **settings: Any,
) -> Attribution:
    """Attribution scores of every neuron at `site` for each group's log-likelihood (see module doc), with the
    settings of `config` (an AttributionConfig) or its fields as keywords (`method="ig", steps=32`)."""
    cfg = configured(AttributionConfig, config, settings, "attribute")
    method, steps, baseline, site = cfg.method, cfg.steps, cfg.baseline, cfg.site
    batch_size, max_length = cfg.batch_size, cfg.max_length
    if not texts or any(isinstance(v, str) or not any(t.strip() for t in v) for v in texts.values()):
        raise NeuronlabError("give {group: [text, ...]} with at least one non-empty text a group")
    n_layers = len(decoder_layers(model))
    layers = list(range(n_layers)) if layers is None else sorted(set(layers))
    check_layers(layers, n_layers)
    base = _baseline(baseline, stats, model, site)
    groups = list(texts)
    scores = torch.zeros(len(groups), n_layers, site_width(model, site), dtype=torch.float64)
    tokens = torch.zeros(len(groups), dtype=torch.int64)
    rank, size = world()
    sites = [Site(layer, site) for layer in layers]
    bar = progress_bar(unit="tok", enabled=progress, unit_scale=True)
    grads = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)  # gradients for activations only: no weight gradients computed or kept
    try:
        for g, group in enumerate(groups):
            bar.set_description(f"{method} {group}")
            for batch in batches(
                windows(tokenizer, Shard(texts[group], rank, size), 0, max_length, False),
                batch_size,
                pad_id(tokenizer, model),
                torch.tensor([]),
                True,
                bucket=16,
            ):
                ids, mask = batch.input_ids, batch.attention_mask
                if method == "gxa":
                    found = _gxa(model, ids, mask, sites, base)
                else:
                    found = {s.layer: _ig(model, ids, mask, s, base, steps) for s in sites}
                for layer, contribution in found.items():
                    scores[g, layer] += contribution.double().cpu()
                n = int(mask[:, 1:].sum())
                tokens[g] += n
                bar.update(n)
    finally:
        for p, flag in zip(model.parameters(), grads, strict=True):
            p.requires_grad_(flag)
        bar.close()
    if size > 1:
        scores, tokens = all_reduce(scores), all_reduce(tokens)
    meta = {
        "method": method,
        "steps": steps if method == "ig" else None,
        "baseline": baseline,
        "site": site,
        "layers": layers,
        "model": model_info(model),
        "max_length": max_length,
    }
    return Attribution(groups, scores, tokens, meta)


def _baseline(baseline: str, stats, model, site: str) -> Tensor | None:
    """None for zero, else each neuron's mean over the stats' tokens, float32 [layers, width]."""
    if baseline == "zero":
        return None
    if baseline != "mean":
        raise NeuronlabError(f"unknown baseline {baseline!r}: use zero or mean")
    if stats is None:
        raise NeuronlabError("baseline 'mean' needs stats (recorded on this model at the same site): pass stats=")
    stats.check_model(model)
    if stats.site != site:
        raise NeuronlabError(f"the stats were recorded at site {stats.site}, not {site}: record them at {site}")
    return (stats.sum.sum(0) / stats.tokens.sum().clamp(min=1)).float()


def _log_likelihood(model, ids: Tensor, mask: Tensor) -> Tensor:
    return -token_nll(model, ids, mask, scored_tokens(mask)).sum()


def _gxa(model, ids, mask, sites: list[Site], base: Tensor | None) -> dict[int, Tensor]:
    """{layer: (a - b) * df/da summed over positions} for every site, from one forward and one backward."""
    seen: dict[int, Tensor] = {}
    first = sites[0].layer

    def grab(site: Site):
        def fn(h: Tensor) -> Tensor:
            # the graph starts at the first site (nothing below needs gradients); the others pass on a view of
            # their value, so what comes after computes from the very tensor whose gradient is asked for
            h = h.detach().requires_grad_() if site.layer == first else h.view_as(h)
            seen[site.layer] = h
            return h

        return fn

    with torch.enable_grad(), hooked(model, {s: grab(s) for s in sites}):
        f = _log_likelihood(model, ids, mask)
    values = [seen[s.layer] for s in sites]
    grads = torch.autograd.grad(f, values)
    return {
        s.layer: _contribution(h.detach(), g, base, s.layer, mask) for s, h, g in zip(sites, values, grads, strict=True)
    }


def _ig(model, ids, mask, site: Site, base: Tensor | None, steps: int) -> Tensor:
    """Integrated gradients of one layer's activations: (a - b) * mean over alpha of df/dz, summed over positions."""
    total: Tensor | None = None
    held: dict[str, Tensor] = {}

    def path(alpha: float):
        def fn(h: Tensor) -> Tensor:
            a = h.detach()
            b = 0.0 if base is None else base[site.layer].to(a.device, a.dtype)
            held["a"] = a
            held["z"] = (b + alpha * (a - b)).requires_grad_()
            return held["z"]

        return fn

    for k in range(steps):
        with torch.enable_grad(), hooked(model, {site: path((k + 0.5) / steps)}):
            f = _log_likelihood(model, ids, mask)
        (g,) = torch.autograd.grad(f, held["z"])
        total = g if total is None else total + g
    assert total is not None  # steps >= 1, checked by attribute
    return _contribution(held["a"], total / steps, base, site.layer, mask)


def _contribution(a: Tensor, grad: Tensor, base: Tensor | None, layer: int, mask: Tensor) -> Tensor:
    """(a - b) * grad summed over real positions, float64 [width]."""
    delta = a.double() if base is None else a.double() - base[layer].to(a.device).double()
    real = mask.to(a.device)[..., None].double()
    return (delta * grad.double() * real).sum((0, 1))


def attribution_neurons(
    attr: Attribution, per_group: int | None = None, counts: NeuronSet | Mapping | None = None, specific: bool = True
) -> NeuronSet:
    """The highest-scoring neurons of each group as a NeuronSet: `per_group` of them, or as many as `counts` holds
    for that group (another NeuronSet, e.g. LAPE's, or {group: n}). With `specific` a neuron's score for G is its
    per-token score for G minus its highest per-token score for another group (what it does for G and not for
    the rest, as LAPE asks of language neurons); otherwise the per-token score itself. Only scores > 0 are kept;
    ties go to the lower layer, then the lower index."""
    if (per_group is None) == (counts is None):
        raise NeuronlabError("give per_group (neurons a group) or counts (a NeuronSet or {group: n}), not both")
    if isinstance(counts, NeuronSet):
        counts = {g: counts.total(g) for g in counts.groups}
    score = attr.per_token
    if specific:
        if len(attr.groups) < 2:
            raise NeuronlabError("specific attribution compares groups: score at least two, or pass specific=False")
        others = torch.stack(
            [score[[j for j in range(len(attr.groups)) if j != g]].amax(0) for g in range(len(attr.groups))]
        )
        score = score - others
    width = score.shape[2]
    neurons = {}
    for g, group in enumerate(attr.groups):
        n = per_group if counts is None else int(counts.get(group, 0))
        flat = score[g].flatten()
        order = torch.argsort(-flat, stable=True)[:n]  # stable: ties keep the lower layer, then index
        kept = order[flat[order] > 0].tolist()
        layers: dict[int, list[int]] = {}
        for i in kept:
            layers.setdefault(i // width, []).append(i % width)
        neurons[group] = layers
    meta = {
        "method": f"attribution ({attr.meta.get('method')})",
        "specific": specific,
        "site": attr.meta.get("site"),
        "model": attr.meta.get("model", {}),
        "per_group": per_group,
        "baseline": attr.meta.get("baseline"),
    }
    return NeuronSet(neurons, meta)


register_artifact("attribution", [FORMAT], Attribution.load)
