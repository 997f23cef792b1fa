"""The learned interventions of Stoehr et al. 2024, each a small class in one registry, and the artifact that holds
what was learned.

    METHODS["activscalar"].identity(width=64, positions=8)      # alpha = 1 for the last 8 positions
    learned = LearnedIntervention("activscalar", {"layers.3.ffn_out": alpha}, meta)
    with nl.apply(model, learned.to_plan()):                   # the one code path, training and use alike
        model(**batch)
    learned.save("pronoun.safetensors"); learned = LearnedIntervention.load("pronoun.safetensors")

A method says what its parameters are per site (identity values), how far they are from the identity (what
minimality penalises), how many "moved", which core Plan entry applies them and what to draw of them. Positions
count from the end of the prompt: parameter row 0 belongs to the last token. Add a method by decorating its class
with `@register_method` (a subclass of Method, named by its `name`).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor

from neuronlab.artifacts import register_artifact
from neuronlab.errors import NeuronlabError
from neuronlab.intervene.plan import Add, DynScale, Intervention, Plan, Scale
from neuronlab.io import read_safetensors, write_safetensors
from neuronlab.models.load import require_same_model
from neuronlab.models.sites import Site
from neuronlab.registry import Registry

COMPONENTS = ("attn_out", "ffn_out", "resid")
FORMAT = "neuronlab.learned/1"
OLD_FORMATS = ("neuronlab.scaling/1",)  # files written before the rename load too


Grids = tuple[dict[str, list[list[float]]], list[str], list[str], float | None]


class Method(ABC):
    """One learned-intervention method: the parameter shapes, the Plan entry and the figure."""

    name: ClassVar[str]
    value: ClassVar[str]  # what `largest` reports per row: alpha, |v|, b

    @abstractmethod
    def identity(self, width: int, positions: int) -> Tensor: ...

    @abstractmethod
    def deviation(self, p: Tensor) -> Tensor:
        """What minimality penalises (zero at the identity)."""

    @abstractmethod
    def moved(self, d: Tensor, eps: float) -> int: ...

    @abstractmethod
    def entry(self, site: Site, p: Tensor) -> Intervention:
        """The core Plan entry that applies `p` at `site` (p may require grad: training runs through it)."""

    @abstractmethod
    def rows(self, name: str, p: Tensor) -> list[tuple[str, float, float]]:
        """(label, value, distance from the identity) per scalar, vector or site, for `largest`."""

    @abstractmethod
    def grids(self, sites: Sequence[Site], params: Sequence[Tensor]) -> Grids:
        """What to draw: per panel a [layer][column] grid, the column labels, the layer labels and the value the
        colour scale centres on (None: its midpoint)."""


def _layout(sites: Sequence[Site]) -> tuple[list[int], list[str]]:
    """The layers and the components (in COMPONENTS order) that `sites` cover."""
    return sorted({s.layer for s in sites}), [k for k in COMPONENTS if any(s.kind == k for s in sites)]


class _PerPosition(Method):
    """Parameters [positions, ...] for the last positions of the prompt (row 0 = the last token)."""

    center: ClassVar[float | None] = None  # the identity value the heatmap centres on

    def entry(self, site: Site, p: Tensor) -> Intervention:
        where = dict(site=site.kind, layers=[site.layer], positions=slice(-p.shape[0], None))
        return self.make(p.flip(0), where)  # the Plan counts rows in position order, the last row last

    @abstractmethod
    def make(self, rows: Tensor, where: dict) -> Intervention: ...

    @abstractmethod
    def column(self, p: Tensor) -> list[float]:
        """One number per position for the heatmap, last token last."""

    def grids(self, sites: Sequence[Site], params: Sequence[Tensor]) -> Grids:
        """Per component a [layer][position] grid over positions -P..-1."""
        layers, kinds = _layout(sites)
        n, nan = max(p.shape[0] for p in params), float("nan")
        out = {k: [[nan] * n for _ in layers] for k in kinds}
        for site, p in zip(sites, params, strict=True):
            values = self.column(p.detach())
            out[site.kind][layers.index(site.layer)] = [nan] * (n - len(values)) + values
        return out, [str(j - n) for j in range(n)], [str(layer) for layer in layers], self.center


METHODS: Registry[Method] = Registry("learned-intervention method", Method)


def register_method(cls: type[Method], replace: bool = False) -> type[Method]:
    """Class decorator: register an instance of a Method subclass under its `name` (a taken name only with
    `replace=True`: `register_method(MyMethod, replace=True)`)."""
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise NeuronlabError(f"register_method takes a subclass of Method, not {cls!r}")
    METHODS.add(cls.name, cls(), replace)
    return cls


@register_method
class ActivScalar(_PerPosition):
    """h <- alpha h, one scalar per site and position; identity alpha = 1."""

    name, value, center = "activscalar", "alpha", 1.0

    def identity(self, width: int, positions: int) -> Tensor:
        return torch.ones(positions)

    def deviation(self, p: Tensor) -> Tensor:
        return p - 1

    def moved(self, d: Tensor, eps: float) -> int:
        return int((d.abs() > eps).sum())

    def make(self, rows: Tensor, where: dict) -> Intervention:
        return Scale(factor=rows, **where)

    def rows(self, name: str, p: Tensor) -> list[tuple[str, float, float]]:
        return [(f"{name}@{-1 - j}", float(p[j]), abs(float(p[j]) - 1)) for j in range(p.shape[0])]

    def column(self, p: Tensor) -> list[float]:
        return [float(v) for v in p.flip(0)]


@register_method
class SteerVec(_PerPosition):
    """h <- h + v, one vector per site and position; identity v = 0 (the steering-vector baseline)."""

    name, value = "steervec", "|v|"

    def identity(self, width: int, positions: int) -> Tensor:
        return torch.zeros(positions, width)

    def deviation(self, p: Tensor) -> Tensor:
        return p

    def moved(self, d: Tensor, eps: float) -> int:
        return int((d.norm(dim=-1) > eps).sum())

    def make(self, rows: Tensor, where: dict) -> Intervention:
        return Add(value=rows, **where)

    def rows(self, name: str, p: Tensor) -> list[tuple[str, float, float]]:
        return [(f"{name}@{-1 - j}", float(p[j].norm()), float(p[j].norm())) for j in range(p.shape[0])]

    def column(self, p: Tensor) -> list[float]:
        return [float(v) for v in p.norm(dim=-1).flip(0)]


@register_method
class DynScalar(Method):
    """h <- (b + w . h / |h|) h, one (w, b) per site shared over positions; identity w = 0, b = 1. Packed as
    [w..., b]."""

    name, value = "dynscalar", "b"

    def identity(self, width: int, positions: int) -> Tensor:
        return torch.cat([torch.zeros(width), torch.ones(1)])

    def deviation(self, p: Tensor) -> Tensor:
        return torch.cat([p[:-1], p[-1:] - 1])

    def moved(self, d: Tensor, eps: float) -> int:
        return int(d.norm() > eps)

    def entry(self, site: Site, p: Tensor) -> Intervention:
        return DynScale(site=site.kind, layers=[site.layer], value=p)

    def rows(self, name: str, p: Tensor) -> list[tuple[str, float, float]]:
        return [(name, float(p[-1]), float(self.deviation(p).norm()))]

    def grids(self, sites: Sequence[Site], params: Sequence[Tensor]) -> Grids:
        """One panel: b and |w| per component (columns) and layer."""
        layers, kinds = _layout(sites)
        cols = [f"{k} {part}" for k in kinds for part in ("b", "|w|")]
        grid = [[float("nan")] * len(cols) for _ in layers]
        for site, p in zip(sites, params, strict=True):
            p, c = p.detach(), kinds.index(site.kind) * 2
            grid[layers.index(site.layer)][c : c + 2] = [float(p[-1]), float(p[:-1].norm())]
        return {f"{self.name} (b, |w|)": grid}, cols, [str(layer) for layer in layers], None


def method(name: str) -> Method:
    return METHODS[name]


@dataclass
class LearnedIntervention:
    """What a learned-intervention method learned: parameters per site ("layers.3.ffn_out" -> tensor) and
    provenance (model, config, training history)."""

    method: str
    params: dict[str, Tensor]  # activscalar [P], steervec [P, d], dynscalar [d + 1]; row 0 = the last token
    meta: dict = field(default_factory=dict)

    @property
    def impl(self) -> Method:
        return method(self.method)

    def sites(self) -> list[Site]:
        return [Site.parse(name) for name in self.params]

    def deviation(self) -> dict[str, Tensor]:
        return {k: self.impl.deviation(p) for k, p in self.params.items()}

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.params.values())

    def l1(self) -> float:
        return float(sum(d.detach().abs().sum() for d in self.deviation().values()))

    def moved(self, eps: float = 0.1) -> int:
        """Scalars (activscalar), vectors (steervec: L2 norm) or sites (dynscalar: L2 norm) moved more than eps."""
        return sum(self.impl.moved(d.detach(), eps) for d in self.deviation().values())

    def largest(self, k: int = 10) -> list[tuple[str, float]]:
        """The k parameters that moved most from the identity, with their values (alpha, |v| or b)."""
        rows = [r for name, p in self.params.items() for r in self.impl.rows(name, p.detach())]
        return [(name, value) for name, value, _ in sorted(rows, key=lambda r: -r[2])[:k]]

    def grids(self) -> Grids:
        """What to draw (the method's own figure, see Method.grids)."""
        return self.impl.grids(self.sites(), list(self.params.values()))

    def summary(self, top: int = 10) -> str:
        """Method, model, size, L1, how many moved, and the `top` parameters that moved most."""
        lines = [
            f"{self.method} on {self.meta.get('model', {}).get('name_or_path') or '?'}: {len(self.params)} sites, "
            f"{self.n_parameters()} parameters, L1 {self.l1():.2f}, moved >0.1: {self.moved(0.1)}"
        ]
        lines += [f"  {name:28s} {self.impl.value} = {v:+.3f}" for name, v in self.largest(top)]
        return "\n".join(lines)

    def to_plan(self, detach: bool = True) -> Plan:
        """The intervention as core Plan entries for `nl.apply`. Training runs through the same entries with
        `detach=False`, so what was learned is what applies. Positions count from the end of each forward call's
        sequence: run prompts unpadded or left-padded (as `generate` does)."""
        impl = self.impl
        return Plan([impl.entry(Site.parse(k), p.detach().clone() if detach else p) for k, p in self.params.items()])

    def check_model(self, model) -> None:
        require_same_model(self.meta.get("model"), model, "this learned intervention")

    def save(self, path: str | Path) -> None:
        tensors = {k: v.detach().float().cpu() for k, v in self.params.items()}
        write_safetensors(path, tensors, FORMAT, method=self.method, meta=json.dumps(self.meta))

    @classmethod
    def load(cls, path: str | Path) -> LearnedIntervention:
        tensors, header = read_safetensors(path, (FORMAT, *OLD_FORMATS), "learned intervention")
        method(header.get("method", "?"))  # a clear error for a method this version does not know
        try:
            meta = json.loads(header.get("meta", "{}"))
        except json.JSONDecodeError as err:
            raise NeuronlabError(f"{path}: the metadata is damaged ({err}); train it again") from None
        return cls(header["method"], tensors, meta)


register_artifact("learned intervention", [FORMAT, *OLD_FORMATS], LearnedIntervention.load)
