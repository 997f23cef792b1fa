"""Stats: streaming, mergeable per-group, per-layer, per-neuron accumulators.

    stats = nl.record(model, tok, {"en": en, "fr": fr}, site="act")
    stats.groups, stats.tokens                 # ["en", "fr"], int64 [groups]
    stats.probability                          # active / tokens, float64 [groups, layers, neurons]
    stats.save("s.safetensors"); stats = Stats.load("s.safetensors")
    both = stats_en.merge(stats_fr)            # refuses stats of another model or site
    stats.add("en", values)                    # values: [tokens, layers, neurons]
    state = stats.state_dict(); Stats.empty(...).load_state_dict(state)

Counts are int64 and sums float64 whatever the model's dtype; memory does not grow with the corpus.
Optional pooled values keep, for the first `pooled_texts` texts of each group, each neuron's mean and
max over that text's tokens (NaN where a group has fewer texts). Optional `contexts` (TopContexts) keep each
neuron's top activating tokens over all groups, with the tokens around them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from neuronlab.artifacts import register_artifact
from neuronlab.errors import NeuronlabError
from neuronlab.io import read_safetensors, write_safetensors
from neuronlab.models.load import require_same_model
from neuronlab.record.topk import TopContexts

FORMAT = "neuronlab.stats/1"


@dataclass
class Moments:
    """Running per-neuron statistics of one layer, on the device of the values: the accumulators `record` keeps
    between flushes into Stats."""

    active: Tensor  # int64 [width]: count of values > 0
    sum: Tensor  # float64 [width]
    sum_sq: Tensor  # float64 [width]
    max: Tensor  # float64 [width]; -inf before any value

    @classmethod
    def zeros(cls, shape: int | tuple[int, ...], device: torch.device | str | None = None) -> Moments:
        shape, f64 = (shape,) if isinstance(shape, int) else shape, torch.float64
        return cls(
            torch.zeros(shape, dtype=torch.int64, device=device),
            torch.zeros(shape, dtype=f64, device=device),
            torch.zeros(shape, dtype=f64, device=device),
            torch.full(shape, float("-inf"), dtype=f64, device=device),
        )

    def add(self, x: Tensor, keep: Tensor | None = None) -> None:
        """Count the rows of x [tokens, ...] (any float dtype; a batch is reduced in float32 or float64, then added
        in float64), only those where the bool `keep` [tokens] is True when given."""
        if x.shape[0] == 0:
            return
        x = x.to(self.sum.device)
        x = x.float() if x.dtype not in (torch.float32, torch.float64) else x
        if keep is not None:
            keep = keep.to(x.device).view(-1, *([1] * (x.dim() - 1)))
            top = x.masked_fill(~keep, float("-inf")).amax(0)
            x = x.masked_fill(~keep, 0.0)  # adds nothing, and 0 is not active
        else:
            top = x.amax(0)
        self.active += (x > 0).sum(0, dtype=torch.int32)  # int32 counts: 6x faster than int64 on CPUs; exact per batch
        self.sum += x.sum(0)
        self.sum_sq += x.square().sum(0)
        torch.maximum(self.max, top.to(self.max.dtype), out=self.max)

    def merge_into(self, stats: Stats, *index: int) -> None:
        """Add these accumulators to `stats` at `index` (group g, or group g and layer), on the CPU."""
        stats.active[index] += self.active.cpu()
        stats.sum[index] += self.sum.cpu()
        stats.sum_sq[index] += self.sum_sq.cpu()
        stats.max[index] = torch.maximum(stats.max[index], self.max.cpu())


@dataclass
class Stats:
    groups: list[str]
    tokens: Tensor  # int64 [groups]
    active: Tensor  # int64 [groups, layers, neurons]: count of values > 0
    sum: Tensor  # float64 [groups, layers, neurons]
    sum_sq: Tensor  # float64 [groups, layers, neurons]
    max: Tensor  # float64 [groups, layers, neurons]; -inf where nothing was counted
    texts: Tensor  # int64 [groups]: texts counted in full (a resumed run skips these)
    meta: dict = field(default_factory=dict)  # model info, site, settings
    pooled_mean: Tensor | None = None  # float32 [groups, pooled_texts, layers, neurons]
    pooled_max: Tensor | None = None  # float32 [groups, pooled_texts, layers, neurons]
    pooled_n: Tensor | None = None  # int64 [groups]: rows of pooled_* filled per group
    contexts: TopContexts | None = None  # each neuron's top activating contexts (record with contexts=True)

    @classmethod
    def empty(
        cls, groups: list[str], n_layers: int, width: int, meta: dict, pooled_texts: int = 0, top_k: int = 0
    ) -> Stats:
        g = len(groups)
        shape = (g, n_layers, width)
        pooled = (g, pooled_texts, n_layers, width)
        return cls(
            groups=list(groups),
            tokens=torch.zeros(g, dtype=torch.int64),
            active=torch.zeros(shape, dtype=torch.int64),
            sum=torch.zeros(shape, dtype=torch.float64),
            sum_sq=torch.zeros(shape, dtype=torch.float64),
            max=torch.full(shape, float("-inf"), dtype=torch.float64),
            texts=torch.zeros(g, dtype=torch.int64),
            meta=dict(meta, pooled_texts=pooled_texts),
            pooled_mean=torch.full(pooled, float("nan")) if pooled_texts else None,
            pooled_max=torch.full(pooled, float("nan")) if pooled_texts else None,
            pooled_n=torch.zeros(g, dtype=torch.int64) if pooled_texts else None,
            contexts=TopContexts.empty(n_layers, top_k, width) if top_k else None,
        )

    @property
    def top_k(self) -> int:
        """How many top contexts a neuron keeps (0: none)."""
        return 0 if self.contexts is None else self.contexts.k

    # ---- derived values -------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return self.active.shape[1]

    @property
    def width(self) -> int:
        return self.active.shape[2]

    @property
    def site(self) -> str:
        return self.meta.get("site", "?")

    def _per_token(self, x: Tensor) -> Tensor:
        return x / self.tokens.clamp(min=1).to(torch.float64)[:, None, None]

    @property
    def probability(self) -> Tensor:
        """Activation probability: share of tokens with value > 0, float64 [groups, layers, neurons]."""
        return self._per_token(self.active.to(torch.float64))

    @property
    def mean(self) -> Tensor:
        return self._per_token(self.sum)

    @property
    def var(self) -> Tensor:
        """Population variance per neuron (float64; clamped at 0 against rounding)."""
        return (self._per_token(self.sum_sq) - self.mean.square()).clamp(min=0)

    def index(self, group: str) -> int:
        if group not in self.groups:
            raise NeuronlabError(f"group {group!r} is not in these stats; they hold {', '.join(self.groups)}")
        return self.groups.index(group)

    # ---- adding and combining ------------------------------------------------------------------
    def add(self, group: str, values: Tensor) -> None:
        """Count `values` [tokens, layers, width] (one row per token) for `group`."""
        g = self.index(group)
        if values.dim() != 3 or tuple(values.shape[1:]) != (self.n_layers, self.width):
            raise NeuronlabError(
                f"values of shape {tuple(values.shape)} do not fit these stats: give "
                f"[tokens, {self.n_layers}, {self.width}]"
            )
        m = Moments.zeros((self.n_layers, self.width))
        m.add(values.detach().cpu())
        m.merge_into(self, g)
        self.tokens[g] += values.shape[0]

    def check_compatible(self, other: Stats) -> None:
        """Raise unless `other` was recorded on the same model and site with the same pooling."""
        require_same_model(self.meta.get("model"), other.meta.get("model", {}), "stats to combine")
        if self.site != other.site:
            raise NeuronlabError(f"stats come from different sites ({self.site} vs {other.site})")
        if self.active.shape[1:] != other.active.shape[1:]:
            raise NeuronlabError(f"stats shapes differ: {tuple(self.active.shape)} vs {tuple(other.active.shape)}")
        if self.meta.get("pooled_texts", 0) != other.meta.get("pooled_texts", 0):
            raise NeuronlabError("stats keep different numbers of pooled texts; record both with the same setting")
        if self.top_k != other.top_k:
            raise NeuronlabError(
                f"stats keep {self.top_k} and {other.top_k} top contexts a neuron; record both with "
                "the same --top-k (or both without --contexts)"
            )

    def check_model(self, model) -> None:
        """Raise unless these stats were recorded on `model` (same shape and weights)."""
        require_same_model(self.meta.get("model"), model, "these stats")

    def merge(self, other: Stats) -> Stats:
        """A new Stats holding both: counts and sums add, max takes the max, pooled rows append, top contexts are
        the best of both."""
        self.check_compatible(other)
        groups = self.groups + [g for g in other.groups if g not in self.groups]
        out = Stats.empty(groups, self.n_layers, self.width, self.meta, self.meta.get("pooled_texts", 0), self.top_k)
        for part in (self, other):
            for i, g in enumerate(part.groups):
                j = groups.index(g)
                out.tokens[j] += part.tokens[i]
                out.texts[j] += part.texts[i]
                Moments(part.active[i], part.sum[i], part.sum_sq[i], part.max[i]).merge_into(out, j)
                if out.pooled_n is not None:
                    mean, top, n_out = out.pooled_mean, out.pooled_max, out.pooled_n
                    assert mean is not None and top is not None and part.pooled_n is not None  # kept together
                    assert part.pooled_mean is not None and part.pooled_max is not None
                    start, n = int(n_out[j]), int(part.pooled_n[i])
                    take = min(n, mean.shape[1] - start)
                    mean[j, start : start + take] = part.pooled_mean[i, :take]
                    top[j, start : start + take] = part.pooled_max[i, :take]
                    n_out[j] += take
        if out.contexts is not None:
            assert self.contexts is not None and other.contexts is not None  # check_compatible: both or neither
            mine, theirs = (
                c.regroup([groups.index(g) for g in gs])
                for c, gs in ((self.contexts, self.groups), (other.contexts, other.groups))
            )
            out.contexts = mine.merged([theirs])
            out.meta["pieces"] = {**other.meta.get("pieces", {}), **self.meta.get("pieces", {})}
        return out

    def resumed(self, saved: Stats) -> Stats:
        """This fresh run continued from the checkpoint `saved` (same model, site and settings; its groups are this
        run's, and `meta["complete"]` says which of them the checkpoint finished)."""
        self.check_compatible(saved)
        if saved.meta.get("settings") != self.meta["settings"]:
            raise NeuronlabError(
                f"the checkpoint was recorded with other settings ({saved.meta.get('settings')}); "
                "use the same settings to resume, or another checkpoint path to start over"
            )
        extra = [g for g in saved.groups if g not in self.groups]
        if extra:
            raise NeuronlabError(f"the checkpoint holds groups {extra} that this run does not: pass the same groups")
        merged = saved.merge(self).subset(self.groups)  # adds empty rows for groups not yet started
        merged.meta["complete"] = [g for g in saved.meta.get("complete", []) if g in self.groups]
        return merged

    def subset(self, groups: list[str]) -> Stats:
        """Stats with only the named groups, in that order (top contexts: those of these groups among the top k)."""
        idx = torch.tensor([self.index(g) for g in groups], dtype=torch.long)
        take = lambda t: t[idx].clone()  # noqa: E731
        pick = lambda t: None if t is None else take(t)  # noqa: E731
        contexts = None
        if self.contexts is not None:
            contexts = self.contexts.regroup([groups.index(g) if g in groups else -1 for g in self.groups])
        return Stats(
            list(groups),
            take(self.tokens),
            take(self.active),
            take(self.sum),
            take(self.sum_sq),
            take(self.max),
            take(self.texts),
            dict(self.meta),
            pick(self.pooled_mean),
            pick(self.pooled_max),
            pick(self.pooled_n),
            contexts,
        )

    # ---- disk -----------------------------------------------------------------------------------
    _TENSORS = ("tokens", "active", "sum", "sum_sq", "max", "texts", "pooled_mean", "pooled_max", "pooled_n")

    def state_dict(self) -> dict:
        """Tensors by name plus "groups" and "meta": everything needed to rebuild these stats."""
        state = {k: getattr(self, k) for k in self._TENSORS if getattr(self, k) is not None}
        if self.contexts is not None:
            state.update(self.contexts.state_dict())
        return {**state, "groups": list(self.groups), "meta": dict(self.meta)}

    def load_state_dict(self, state: dict) -> None:
        """Replace everything with a state from `state_dict` (shapes are checked against the groups)."""
        groups = list(state["groups"])
        for k in ("tokens", "active", "sum", "sum_sq", "max", "texts"):
            if k not in state or state[k].shape[0] != len(groups):
                raise NeuronlabError(f"stats state: {k!r} is missing or does not have one row per group")
        self.groups, self.meta = groups, dict(state["meta"])
        for k in self._TENSORS:
            setattr(self, k, state.get(k))
        self.contexts = TopContexts.from_state(state)

    def save(self, path: str | Path) -> None:
        """Write safetensors (tensors) with JSON metadata, atomically: a crash never leaves half a file."""
        state = self.state_dict()
        groups, meta = state.pop("groups"), state.pop("meta")
        write_safetensors(
            path,
            state,
            FORMAT,
            groups=json.dumps(groups),
            meta=json.dumps(meta),
            tokens=json.dumps(dict(zip(groups, self.tokens.tolist(), strict=True))),
        )

    @classmethod
    def load(cls, path: str | Path) -> Stats:
        tensors, header = read_safetensors(path, FORMAT, "stats")
        try:
            state = {**tensors, "groups": json.loads(header["groups"]), "meta": json.loads(header["meta"])}
        except (KeyError, json.JSONDecodeError) as err:
            raise NeuronlabError(f"{path}: the stats metadata is damaged ({err}); record the stats again") from None
        stats = cls.empty(state["groups"], 0, 0, {})
        stats.load_state_dict(state)
        return stats

    def summary(self) -> str:
        """A few lines for people: model, site, groups with tokens and texts, mean activation probability."""
        model = self.meta.get("model", {})
        lines = [
            f"stats of {model.get('name_or_path') or '(unnamed model)'} at site {self.site}: "
            f"{self.n_layers} layers x {self.width} neurons"
        ]
        p = self.probability
        for i, g in enumerate(self.groups):
            pooled = f", {int(self.pooled_n[i])} pooled texts" if self.pooled_n is not None else ""
            lines.append(
                f"  {g}: {int(self.tokens[i])} tokens, {int(self.texts[i])} texts{pooled}, "
                f"mean P(value>0) {float(p[i].mean()):.3f}"
            )
        if self.contexts is not None:
            lines.append(f"  top {self.top_k} activating contexts kept a neuron (neuronlab view)")
        return "\n".join(lines)


register_artifact("stats", [FORMAT], Stats.load)
