"""Plan values as JSON: tensors (inline, or named in a .safetensors file beside the JSON), slices, neuron sets and
per-layer dicts, and back."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from neuronlab.errors import NeuronlabError
from neuronlab.select.neuron_set import NeuronSet


def tensors_path(path: Path) -> Path:
    return path.with_suffix(".safetensors")


def encode_value(v, tensors: dict | None):
    if isinstance(v, Tensor):
        if tensors is None:
            return {"tensor": v.tolist(), "dtype": str(v.dtype).removeprefix("torch.")}
        name = f"t{len(tensors)}"
        tensors[name] = v.detach().cpu()
        return {"tensor_ref": name}
    if isinstance(v, slice):
        return {"slice": [v.start, v.stop, v.step]}
    if isinstance(v, NeuronSet):
        return {"neuron_set": {"neurons": v.neurons, "meta": v.meta}}
    if isinstance(v, Mapping):
        return {"per_layer": {str(k): encode_value(x, tensors) for k, x in v.items()}}
    if isinstance(v, (list, tuple)):
        return [int(i) for i in v]
    return v


def decode_value(v, tensors: dict):
    if not isinstance(v, dict):
        return v
    if "tensor_ref" in v:
        if v["tensor_ref"] not in tensors:
            raise NeuronlabError(f"tensor {v['tensor_ref']!r} is missing from the plan's .safetensors file")
        return tensors[v["tensor_ref"]]
    if "tensor" in v:
        return torch.tensor(v["tensor"], dtype=getattr(torch, v["dtype"]))
    if "slice" in v:
        return slice(*v["slice"])
    if "neuron_set" in v:
        return NeuronSet(v["neuron_set"]["neurons"], v["neuron_set"]["meta"])
    if "per_layer" in v:
        return {int(k): decode_value(x, tensors) for k, x in v["per_layer"].items()}
    raise NeuronlabError(f"cannot read plan value {v!r}")
