"""NeuronSet: group label -> layer -> sorted neuron indices, with provenance.

ns = NeuronSet({"fr": {12: [5, 40]}, "de": {3: [7]}}, meta={"method": "lape", "site": "act"})
ns.groups, ns["fr"][12], ns.counts()       # ["fr", "de"], [5, 40], {"fr": {12: 2}, "de": {3: 1}}
ns.subset(["fr"]) | other                  # union; `&` is the intersection
ns.save("n.json"); ns = NeuronSet.load("n.json")
ns.validate(model)                         # layer and index ranges, with a clear error
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from neuronlab.artifacts import register_artifact
from neuronlab.errors import NeuronlabError
from neuronlab.io import read_json, write_json

FORMAT = "neuronlab.neuron_set/1"


def _clean(neurons: Mapping[str, Mapping[int, Iterable[int]]]) -> dict[str, dict[int, list[int]]]:
    out: dict[str, dict[int, list[int]]] = {}
    for group, layers in neurons.items():
        out[str(group)] = {}
        for layer, idx in sorted(((int(k), v) for k, v in layers.items())):
            values = sorted(set(map(int, idx)))
            if values and (values[0] < 0 or layer < 0):
                raise NeuronlabError(f"negative layer or neuron index in group {group!r}, layer {layer}")
            if values:
                out[str(group)][layer] = values
    return out


@dataclass
class NeuronSet:
    neurons: dict[str, dict[int, list[int]]]
    meta: dict = field(default_factory=dict)  # provenance: model, method, thresholds, site, ...

    def __post_init__(self) -> None:
        self.neurons = _clean(self.neurons)

    @property
    def groups(self) -> list[str]:
        return list(self.neurons)

    def __getitem__(self, group: str) -> dict[int, list[int]]:
        if group not in self.neurons:
            raise NeuronlabError(f"group {group!r} is not in this neuron set; it holds {', '.join(self.groups)}")
        return self.neurons[group]

    def __contains__(self, group: str) -> bool:
        return group in self.neurons

    def subset(self, groups: Iterable[str]) -> NeuronSet:
        """A NeuronSet with only these groups."""
        return NeuronSet({g: self[g] for g in groups}, dict(self.meta))

    def layers(self) -> dict[int, list[int]]:
        """All groups together: layer -> sorted indices."""
        merged: dict[int, set[int]] = {}
        for layers in self.neurons.values():
            for layer, idx in layers.items():
                merged.setdefault(layer, set()).update(idx)
        return {layer: sorted(merged[layer]) for layer in sorted(merged)}

    def pairs(self, group: str | None = None) -> set[tuple[int, int]]:
        """(layer, neuron) of one group's neurons, or of all groups together."""
        layers = self[group] if group is not None else self.layers()
        return {(layer, i) for layer, idx in layers.items() for i in idx}

    def counts(self) -> dict[str, dict[int, int]]:
        return {g: {layer: len(idx) for layer, idx in layers.items()} for g, layers in self.neurons.items()}

    def total(self, group: str | None = None) -> int:
        groups = [group] if group is not None else self.groups
        return sum(len(idx) for g in groups for idx in self[g].values())

    def _combine(self, other: NeuronSet, op, how: str) -> NeuronSet:
        """Combine group by group and layer by layer; both sets must index the same site of the same model, and
        the result keeps that site and model (so steering and validation still know them)."""
        from neuronlab.models.load import require_same_model

        site_a, site_b = self.meta.get("site", "act"), other.meta.get("site", "act")
        if site_a != site_b:
            raise NeuronlabError(
                f"cannot combine neuron sets of different sites ({site_a} and {site_b}): their "
                "indices mean different values"
            )
        model = self.meta.get("model") or other.meta.get("model")
        if self.meta.get("model") and other.meta.get("model"):
            require_same_model(self.meta["model"], other.meta["model"], "the neuron sets to combine")
        out: dict[str, dict[int, list[int]]] = {}
        for g in dict.fromkeys(self.groups + other.groups):
            a, b = self.neurons.get(g, {}), other.neurons.get(g, {})
            out[g] = {layer: op(set(a.get(layer, [])), set(b.get(layer, []))) for layer in set(a) | set(b)}
        meta = {
            "method": how,
            "site": site_a,
            **({"model": model} if model else {}),
            "combined": [self.meta, other.meta],
        }
        return NeuronSet(out, meta)

    def __or__(self, other: NeuronSet) -> NeuronSet:
        """Union, group by group and layer by layer."""
        return self._combine(other, set.union, "union")

    def __and__(self, other: NeuronSet) -> NeuronSet:
        """Intersection, group by group and layer by layer (groups in only one side end up empty)."""
        return self._combine(other, set.intersection, "intersection")

    union = __or__
    intersection = __and__

    def validate(self, model, site: str | None = None) -> None:
        """Raise unless every layer and neuron index exists in `model` at `site` (default: the set's site)."""
        from neuronlab.models.load import require_same_model
        from neuronlab.models.sites import decoder_layers, site_width

        kind = site or self.meta.get("site", "act")
        require_same_model(self.meta.get("model"), model, "this neuron set")
        n_layers, width = len(decoder_layers(model)), site_width(model, kind)
        for g, layers in self.neurons.items():
            for layer, idx in layers.items():
                if layer >= n_layers:
                    raise NeuronlabError(
                        f"group {g!r}: layer {layer} is out of range (the model has {n_layers} layers)"
                    )
                if idx[-1] >= width:
                    raise NeuronlabError(
                        f"group {g!r}, layer {layer}: neuron index {idx[-1]} is out of range "
                        f"(site {kind} has {width} neurons per layer); was this set made for another model?"
                    )

    def save(self, path: str | Path) -> None:
        data = {
            "format": FORMAT,
            "meta": self.meta,
            "neurons": {g: {str(k): v for k, v in layers.items()} for g, layers in self.neurons.items()},
        }
        write_json(path, data)

    @classmethod
    def load(cls, path: str | Path) -> NeuronSet:
        data = read_json(path, "neuron set", (FORMAT,))
        try:
            return cls(data["neurons"], data.get("meta", {}))
        except (KeyError, AttributeError, TypeError, ValueError) as err:
            raise NeuronlabError(f"{path}: the neurons are damaged ({err}); select them again") from None

    def summary(self) -> str:
        lines = [
            f"neuron set ({self.meta.get('method', '?')}, site {self.meta.get('site', '?')}): "
            f"{len(self.groups)} groups, {self.total()} neurons"
        ]
        for g, layers in self.neurons.items():
            per_layer = " ".join(f"{layer}:{len(idx)}" for layer, idx in layers.items())
            lines.append(f"  {g}: {self.total(g)} neurons  (layer:count {per_layer})")
        return "\n".join(lines)


register_artifact("neuron set", [FORMAT], NeuronSet.load)
