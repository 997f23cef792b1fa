"""ExpertStats: the counts and sums `record_experts` (`record/moe.py`) keeps per group, layer, expert and neuron.

    stats.usage()                    # routed / tokens: how often each expert is chosen, [groups, layers, experts]
    stats.probability()              # active / routed: a neuron's firing rate given its expert, [g, l, e, d_ff]
    stats.probability(routed=False)  # active / tokens: its rate over all tokens
    stats.shared_probability()       # a shared expert's neurons: active / tokens, [g, l, shared d_ff]
    stats.save("experts.safetensors"); ExpertStats.load(...); stats.merge(other)

Counts are int64 and sums float64; stats of two runs on the same model add up (`merge`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from neuronlab.artifacts import register_artifact
from neuronlab.errors import NeuronlabError
from neuronlab.io import read_safetensors, write_safetensors
from neuronlab.models.load import require_same_model

FORMAT = "neuronlab.expert-stats/1"
TENSORS = ("tokens", "texts", "routed", "weight", "active", "sum")
SHARED_TENSORS = ("shared_active", "shared_sum")  # where the layers hold a shared expert
SUMS = ("routed", "weight", "active", "sum")  # per layer and expert (and neuron): what `record_experts` adds up


@dataclass
class ExpertStats:
    """Counts and sums per group over the MoE layers `layers` (module doc)."""

    groups: list[str]
    layers: list[int]  # the model's MoE layers, in order: row i of each tensor is layer layers[i]
    tokens: Tensor  # int64 [groups]
    texts: Tensor  # int64 [groups]: texts complete (a resumed run starts after them)
    routed: Tensor  # int64 [groups, layers, experts]: counted tokens routed to the expert
    weight: Tensor  # float64 [groups, layers, experts]: the sum of their router weights
    active: Tensor  # int64 [groups, layers, experts, d_ff]: routed tokens where the neuron's value > 0
    sum: Tensor  # float64 [groups, layers, experts, d_ff]: the sum of its values over the routed tokens
    meta: dict = field(default_factory=dict)
    shared_active: Tensor | None = None  # int64 [groups, layers, shared d_ff]: tokens where a shared neuron > 0
    shared_sum: Tensor | None = None  # float64 [groups, layers, shared d_ff]: the sum of its values

    @classmethod
    def empty(
        cls, groups: Sequence[str], layers: Sequence[int], experts: int, d_ff: int, meta: dict, shared_d_ff: int = 0
    ) -> ExpertStats:
        g, n = len(groups), len(layers)
        out = cls(
            list(groups),
            list(layers),
            torch.zeros(g, dtype=torch.long),
            torch.zeros(g, dtype=torch.long),
            torch.zeros(g, n, experts, dtype=torch.long),
            torch.zeros(g, n, experts, dtype=torch.float64),
            torch.zeros(g, n, experts, d_ff, dtype=torch.long),
            torch.zeros(g, n, experts, d_ff, dtype=torch.float64),
            meta,
        )
        if shared_d_ff:
            out.shared_active = torch.zeros(g, n, shared_d_ff, dtype=torch.long)
            out.shared_sum = torch.zeros(g, n, shared_d_ff, dtype=torch.float64)
        return out

    @property
    def shared_d_ff(self) -> int:
        """The shared expert's neurons a layer (0: these stats hold none)."""
        return 0 if self.shared_active is None else int(self.shared_active.shape[2])

    def blank(self, groups: Sequence[str], meta: dict) -> ExpertStats:
        """Empty stats of `groups` over the same MoE layers and widths."""
        experts, d_ff = self.active.shape[2:]
        return ExpertStats.empty(groups, self.layers, experts, d_ff, meta, self.shared_d_ff)

    def tensor_names(self) -> tuple[str, ...]:
        """The tensors these stats hold: TENSORS, and SHARED_TENSORS where the layers hold a shared expert."""
        return TENSORS + (SHARED_TENSORS if self.shared_d_ff else ())

    def shared_probability(self) -> Tensor:
        """A shared neuron's firing rate over all of a group's tokens, float64 [groups, layers, shared d_ff]."""
        if self.shared_active is None:
            raise NeuronlabError("these expert stats hold no shared expert")
        return self.shared_active.double() / self.tokens.clamp(min=1).double()[:, None, None]

    def usage(self) -> Tensor:
        """routed / tokens: the share of a group's tokens that each expert gets, float64 [groups, layers, experts]."""
        return self.routed.double() / self.tokens.clamp(min=1).double()[:, None, None]

    def probability(self, routed: bool = True) -> Tensor:
        """A neuron's firing rate, float64 [groups, layers, experts, d_ff]: over the tokens routed to its expert
        (`routed`; 0 where a group sent its expert none), else over all of the group's tokens."""
        base = self.routed.double()[..., None] if routed else self.tokens.double()[:, None, None, None]
        return torch.nan_to_num(self.active.double() / base, nan=0.0)

    def mean(self) -> Tensor:
        """A neuron's mean value over the tokens routed to its expert, float64 [groups, layers, experts, d_ff]."""
        return torch.nan_to_num(self.sum / self.routed.double()[..., None], nan=0.0)

    def merge(self, other: ExpertStats) -> ExpertStats:
        """The stats of both runs (same model, MoE layers and widths), groups in order of first appearance."""
        require_same_model(self.meta.get("model"), other.meta.get("model") or {}, "these expert stats")
        widths = [(s.layers, tuple(s.active.shape[2:]), s.shared_d_ff) for s in (self, other)]
        if widths[0] != widths[1]:
            raise NeuronlabError(
                f"expert stats of different MoE layers or widths (layers, (experts, d_ff), shared d_ff: {widths[0]} "
                f"and {widths[1]}) cannot be merged: a shared width of 0 is a file without the shared expert"
            )
        groups = list(dict.fromkeys(self.groups + other.groups))
        out = self.blank(groups, dict(self.meta))
        for part in (self, other):
            rows = torch.tensor([groups.index(g) for g in part.groups])
            for k in self.tensor_names():
                getattr(out, k).index_add_(0, rows, getattr(part, k))
        return out

    def save(self, path: str | Path) -> None:
        """safetensors with the groups, layers and meta as JSON, written atomically."""
        write_safetensors(
            path,
            {k: getattr(self, k) for k in self.tensor_names()},
            FORMAT,
            groups=json.dumps(self.groups),
            layers=json.dumps(self.layers),
            meta=json.dumps(self.meta),
        )

    @classmethod
    def load(cls, path: str | Path) -> ExpertStats:
        tensors, header = read_safetensors(path, FORMAT, "expert stats")
        try:
            groups, layers, meta = (json.loads(header[k]) for k in ("groups", "layers", "meta"))
        except (KeyError, json.JSONDecodeError) as err:
            raise NeuronlabError(f"{path}: the expert stats metadata is damaged ({err}); record them again") from None
        missing = [k for k in TENSORS if k not in tensors]
        if missing:
            raise NeuronlabError(f"{path}: the expert stats lack {', '.join(missing)}; record them again")
        t = tensors
        out = cls(groups, layers, t["tokens"], t["texts"], t["routed"], t["weight"], t["active"], t["sum"], meta)
        out.shared_active, out.shared_sum = t.get("shared_active"), t.get("shared_sum")
        return out

    def summary(self) -> str:
        g, n, e, d = self.active.shape
        model = self.meta.get("model", {}).get("name_or_path") or "(unnamed model)"
        lines = [f"expert stats of {model}: {n} MoE layers x {e} experts x {d} neurons, {g} groups"]
        if self.shared_active is not None:
            lines[0] += f"; a shared expert of {self.shared_active.shape[2]} neurons a layer"
        lines += [f"  {grp}: {int(t)} tokens" for grp, t in zip(self.groups, self.tokens.tolist(), strict=True)]
        return "\n".join(lines)


register_artifact("expert stats", [FORMAT], ExpertStats.load)
