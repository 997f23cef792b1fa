"""Interventions and Plans: serialisable data saying what to change where; `apply` and `bake` act on them.

    plan = Plan([Scale(factor=2.0, site="act", neurons=ns.subset(["fr"]))])
    plan = Plan([Set(value=0.5, neurons=[3, 9], layers=[4]), Add(value=vec, site="ffn_out", layers=[7],
                 positions="last")])
    plan.save("plan.json"); plan = Plan.load("plan.json")

Each intervention names a site kind, the neurons (a NeuronSet: its layers and indices, all groups together;
a list of indices: the same indices in every layer of `layers`; None: every value of the site), the layers
(None: all, or the NeuronSet's) and the positions:
- "all": every position of every forward call;
- "last": the last real token of each row (by the attention mask); while generating with a KV cache each
  step's single new token is the last, so the prompt's last token and every generated token are changed;
- a slice or a boolean mask ([pos] or [batch, pos]) over absolute positions in the sequence: with a KV cache,
  a generation step at position p is changed if p is in the slice / mask[p] is True (beyond the mask: no).
Values (Set, Add) are a number, a tensor with one value per selected neuron (or per value of the site),
or a dict layer -> such a tensor, for per-layer values. With a slice of positions, a value (or a Scale factor)
may also hold one row per position: [n, k] (Scale: [n]), aligned at the end of the slice, so the last row
belongs to the slice's last position; positions the slice selects beyond the n rows are left unchanged.
`Plan([Scale(factor=torch.tensor([0.5, 2.0]), positions=slice(-2, None))])` halves the second-to-last token
and doubles the last. Learned interventions (activation scalars, steering vectors) become such entries. A new kind
of intervention is a frozen dataclass subclass of Intervention with an `edit`, decorated with
`@register_intervention` so that plans holding it save and load.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from neuronlab.artifacts import register_artifact
from neuronlab.errors import NeuronlabError
from neuronlab.intervene.codec import decode_value, encode_value, tensors_path
from neuronlab.io import Writer, atomic_writes, json_writer, read_json, read_safetensors, safetensors_writer
from neuronlab.models.sites import check_kind, check_layers
from neuronlab.registry import Registry
from neuronlab.select.neuron_set import NeuronSet

Positions = str | slice | Tensor
FORMAT = "neuronlab.plan/2"  # tensors in a .safetensors file beside the JSON
OLD_FORMATS = ("neuronlab.plan/1",)  # tensors inline as JSON lists
TENSORS_FORMAT = "neuronlab.plan_tensors/1"


@dataclass(frozen=True, eq=False)
class Intervention:
    site: str = "act"
    neurons: NeuronSet | Sequence[int] | None = None
    layers: Sequence[int] | None = None
    positions: Positions = "all"

    def __post_init__(self) -> None:
        check_kind(self.site)
        if self.site == "router":
            raise NeuronlabError("the router site is read-only (record it); intervene on ffn_out, attn_out or resid")
        p = self.positions
        if not (p in ("all", "last") if isinstance(p, str) else isinstance(p, (slice, Tensor))):
            raise NeuronlabError(f"positions must be 'all', 'last', a slice or a boolean mask, not {p!r}")
        if isinstance(p, Tensor) and (p.dtype != torch.bool or p.dim() not in (1, 2)):
            raise NeuronlabError("a positions mask must be a bool tensor of shape [pos] or [batch, pos]")

    per_position_dims = 2  # a value tensor with this many dimensions holds one row per position

    def holds_positions(self, value) -> bool:
        """Whether a compiled value is given per position (a tensor with `per_position_dims` dimensions)."""
        return isinstance(value, Tensor) and value.dim() == self.per_position_dims

    def per_position(self, value) -> bool:
        """Whether a compiled value holds one row per position of the slice (an error without a slice)."""
        if self.holds_positions(value):
            if not isinstance(self.positions, slice):
                raise NeuronlabError(
                    f"{type(self).__name__}: one value per position needs positions=slice(...), not {self.positions!r}"
                )
            return True
        return False

    def targets(self, n_layers: int) -> dict[int, list[int] | None]:
        """layer -> neuron indices (None: the whole site) this intervention touches."""
        chosen: dict[int, list[int] | None]
        if isinstance(self.neurons, NeuronSet):
            chosen = dict(self.neurons.layers().items())
            if self.layers is not None:
                chosen = {layer: idx for layer, idx in chosen.items() if layer in set(self.layers)}
        else:
            idx = None if self.neurons is None else sorted({int(i) for i in self.neurons})
            chosen = {int(layer): idx for layer in (range(n_layers) if self.layers is None else self.layers)}
        check_layers(chosen, n_layers)
        return chosen

    def value_at(self, layer: int, k: int) -> float | Tensor:
        """The value for one layer with `k` selected values, checked for shape."""
        v = getattr(self, "value", None)
        if v is None:
            return 0.0
        if isinstance(v, Mapping):
            if layer not in v:
                raise NeuronlabError(f"{type(self).__name__} has per-layer values but none for layer {layer}")
            v = v[layer]
        if isinstance(v, (int, float)):
            return float(v)
        t = torch.as_tensor(v)
        if t.dim() == 0 and not t.requires_grad:
            return float(t)
        if t.shape[-1:] != (k,) or t.dim() > 2:
            raise NeuronlabError(
                f"{type(self).__name__} value for layer {layer} has shape {tuple(t.shape)}, "
                f"but {k} values are selected there: give one number, one value per selected neuron, or "
                "[positions, neurons] with a slice of positions"
            )
        return t

    def edit(self, x: Tensor, value: float | Tensor, h: Tensor) -> Tensor:
        """New values for `x` ([batch, pos, k], the selected values of `h` [batch, pos, width])."""
        raise NotImplementedError


KINDS_OF_INTERVENTION: Registry[type[Intervention]] = Registry("intervention kind", Intervention, classes=True)


def register_intervention(cls: type[Intervention]) -> type[Intervention]:
    """Class decorator: plans may hold this kind of intervention and save and load it (under the class name)."""
    KINDS_OF_INTERVENTION.add(cls.__name__, cls)
    return cls


@register_intervention
@dataclass(frozen=True, eq=False)
class Scale(Intervention):
    """Multiply by `factor`: a number; with a slice of positions one factor per position ([n]); or a dict
    layer -> a number or one factor per selected neuron ([k]), as AurA's per-neuron dampening needs."""

    factor: float | Tensor | Mapping[int, float | Tensor] = 1.0

    def holds_positions(self, value) -> bool:  # a 1-D factor; per-neuron factors come from a per-layer dict
        return isinstance(self.factor, Tensor) and self.factor.dim() == 1

    def value_at(self, layer: int, k: int) -> float | Tensor:
        f = self.factor
        if isinstance(f, Mapping):
            if layer not in f:
                raise NeuronlabError(f"Scale has per-layer factors but none for layer {layer}")
            t = torch.as_tensor(f[layer])
            if t.dim() == 0:
                return float(t)
            if t.shape != (k,):
                raise NeuronlabError(
                    f"Scale factors for layer {layer} have shape {tuple(t.shape)}, but {k} values are "
                    "selected there: give one number or one factor per selected neuron"
                )
            return t
        if isinstance(f, Tensor) and (f.dim() > 1 or (f.dim() == 0 and not f.requires_grad)):
            if f.dim() > 1:
                raise NeuronlabError("Scale takes one factor, one per position (1-D), or a dict layer -> per neuron")
            return float(f)
        return f if isinstance(f, Tensor) else float(f)

    def edit(self, x: Tensor, value, h: Tensor) -> Tensor:
        return x * value


@register_intervention
@dataclass(frozen=True, eq=False)
class Set(Intervention):
    """Replace by `value` (a number, one per neuron, or per layer)."""

    value: float | Tensor | Mapping[int, float | Tensor] = 0.0

    def edit(self, x: Tensor, value, h: Tensor) -> Tensor:
        return torch.zeros_like(x) + value


@register_intervention
@dataclass(frozen=True, eq=False)
class Add(Intervention):
    """Add `value` (a number, a vector over the selected neurons, or per layer)."""

    value: float | Tensor | Mapping[int, float | Tensor] = 0.0

    def edit(self, x: Tensor, value, h: Tensor) -> Tensor:
        return x + value


@register_intervention
@dataclass(frozen=True, eq=False)
class Zero(Intervention):
    """Set to zero (deactivate)."""

    def edit(self, x: Tensor, value, h: Tensor) -> Tensor:
        return torch.zeros_like(x)


@register_intervention
@dataclass(frozen=True, eq=False)
class LayerStat(Intervention):
    """Set to (or, with mode="add", add) a statistic of the whole site at the same token, computed on the
    current input: stat "max" (the layer's largest value) or "pNN" (its NN-th percentile, linear
    interpolation as numpy). The amplification paper's test-time variants: set to p10, set to / add max."""

    stat: str = "max"
    mode: str = "set"

    def __post_init__(self) -> None:
        super().__post_init__()
        ok = self.stat == "max" or (self.stat.startswith("p") and self.stat[1:].replace(".", "", 1).isdigit())
        if not ok or not (self.stat == "max" or 0 <= float(self.stat[1:]) <= 100) or self.mode not in ("set", "add"):
            raise NeuronlabError(
                f"LayerStat takes stat='max' or 'p0'..'p100' and mode 'set' or 'add', not {self.stat!r}, {self.mode!r}"
            )

    def edit(self, x: Tensor, value, h: Tensor) -> Tensor:
        ref = h.amax(-1, keepdim=True) if self.stat == "max" else _quantile(h, float(self.stat[1:]) / 100)
        return x + ref if self.mode == "add" else torch.zeros_like(x) + ref


@register_intervention
@dataclass(frozen=True, eq=False)
class DynScale(Intervention):
    """Multiply the selected values x of each token by a scalar computed from x itself (Stoehr et al.'s
    DynScalar): alpha = b + w . x / |x|. `value` packs w (one weight per selected value) then b: a tensor of
    k + 1 numbers, or a dict layer -> such a tensor. w = 0, b = 1 is the identity."""

    value: Tensor | Mapping[int, Tensor] | None = None

    per_position_dims = 3  # never: one (w, b) for every position

    def value_at(self, layer: int, k: int) -> Tensor:
        v = super().value_at(layer, k + 1)
        if not isinstance(v, Tensor) or v.dim() != 1:
            raise NeuronlabError("DynScale needs a tensor of weights and a bias (k + 1 numbers) per layer")
        return v

    def edit(self, x: Tensor, value: float | Tensor, h: Tensor) -> Tensor:
        assert isinstance(value, Tensor)  # value_at checked it
        return x * dyn_alpha(x, value[:-1], value[-1])[..., None].to(x.dtype)


def dyn_alpha(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """b + w . x / |x| over the last dimension, in float32 or wider: [...]."""
    x = x if x.dtype in (torch.float32, torch.float64) else x.float()
    return b + (x @ w.to(x.dtype)) / x.norm(dim=-1).clamp_min(torch.finfo(x.dtype).tiny)


def _quantile(h: Tensor, q: float) -> Tensor:
    """q-quantile over the last dimension, linear interpolation; [..., 1] (works on any width)."""
    s = h.float().sort(-1).values
    pos = q * (s.shape[-1] - 1)
    lo, frac = int(pos), pos - int(pos)
    hi = min(lo + 1, s.shape[-1] - 1)
    return (s[..., lo : lo + 1] * (1 - frac) + s[..., hi : hi + 1] * frac).to(h.dtype)


@dataclass
class Plan:
    """An ordered list of interventions; ones on the same site apply in this order."""

    interventions: list[Intervention] = field(default_factory=list)

    def __iter__(self):
        return iter(self.interventions)

    def __len__(self) -> int:
        return len(self.interventions)

    def __add__(self, other: Plan) -> Plan:
        return Plan(self.interventions + other.interventions)

    def to_dict(self, tensors: dict[str, Tensor] | None = None) -> dict:
        """JSON-ready form. Tensors go into `tensors` (name -> tensor) and the JSON names them; without a dict
        they are written inline as lists (small plans, tests)."""
        return {"format": FORMAT, "interventions": [_encode(iv, tensors) for iv in self.interventions]}

    @classmethod
    def from_dict(cls, data: dict, tensors: dict[str, Tensor] | None = None) -> Plan:
        if not isinstance(data, dict) or data.get("format") not in (FORMAT, *OLD_FORMATS):
            raise NeuronlabError(f"not a neuronlab plan (no format {FORMAT!r})")
        entries = data.get("interventions")
        if not isinstance(entries, list):
            raise NeuronlabError("a plan needs a list of interventions")
        return cls([_decode(d, tensors or {}) for d in entries])

    def summary(self) -> str:
        lines = [f"plan with {len(self)} interventions"]
        for iv in self:
            lines.append(f"  {type(iv).__name__} on {iv.site}, layers {iv.layers or 'all'}, positions {iv.positions}")
        return "\n".join(lines)

    def save(self, path: str | Path) -> None:
        """plan.json, and its tensors in plan.safetensors beside it (written first: the JSON names them)."""
        path = Path(path)
        tensors: dict[str, Tensor] = {}
        data = self.to_dict(tensors)
        writers: dict[str | Path, Writer] = {}
        if tensors:
            data["tensors"] = tensors_path(path).name
            writers[tensors_path(path)] = safetensors_writer(tensors, TENSORS_FORMAT)
        atomic_writes({**writers, path: json_writer(data)})  # both files, or neither

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        path = Path(path)
        data = read_json(path, "plan", (FORMAT, *OLD_FORMATS))
        tensors: dict[str, Tensor] = {}
        name = data.get("tensors")
        if name:
            if not isinstance(name, str) or Path(name).name != name or name in (".", ".."):
                raise NeuronlabError(
                    f"{path} names its tensors file {name!r}, which is not a file beside it: a plan reads only the "
                    "file named by its name alone in its own folder (as Plan.save writes it); put the file there"
                )
            tensors, _ = read_safetensors(path.parent / name, TENSORS_FORMAT, "plan tensors")
        try:
            return cls.from_dict(data, tensors)
        except NeuronlabError as err:
            raise NeuronlabError(f"{path}: {err}") from None


def _encode(iv: Intervention, tensors: dict | None) -> dict:
    fields = {k: encode_value(v, tensors) for k, v in vars(iv).items()}
    return {"kind": type(iv).__name__, **fields}


def _decode(d: dict, tensors: dict) -> Intervention:
    if not isinstance(d, dict):
        raise NeuronlabError(f"an intervention must be a JSON object, not {d!r}")
    d = dict(d)
    kind = d.pop("kind", None)
    cls = KINDS_OF_INTERVENTION[kind]  # an unknown kind: one error naming the known ones
    try:
        return cls(**{k: decode_value(v, tensors) for k, v in d.items()})
    except (TypeError, KeyError, ValueError, RuntimeError) as err:
        raise NeuronlabError(f"cannot read a {kind} intervention ({err})") from None


register_artifact("plan", [FORMAT, *OLD_FORMATS], Plan.load)
