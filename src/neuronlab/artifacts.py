"""One table of every artifact kind neuronlab writes: its format tag, what it is, and how to load and summarise
it. `neuronlab inspect` reads any of them through `describe`.

    >>> describe("stats.safetensors")      # "stats of ... at site act: 24 layers x 11008 neurons ..."
    >>> load_artifact("neurons.json")      # a NeuronSet
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from neuronlab.errors import NeuronlabError


@dataclass(frozen=True)
class ArtifactKind:
    what: str
    load: Callable[[Path], object]
    summary: Callable[[object], str]


def _stats(path):
    from neuronlab.record.stats import Stats

    return Stats.load(path)


def _learned(path):
    from neuronlab.learn.methods import LearnedIntervention

    return LearnedIntervention.load(path)


def _vector(path):
    from neuronlab.analyze.arithmetic import load_vector

    return load_vector(path)


def _vector_summary(loaded) -> str:
    vector, meta = loaded
    model = meta.get("model", {}).get("name_or_path") or "?"
    return (
        f"vector of {vector.numel()} values, norm {float(vector.norm()):.4f}: {meta.get('site', '?')} of layer "
        f"{meta.get('layer', '?')} on {model}, mean over {meta.get('prompts', '?')} prompts "
        f"({meta.get('pairs', '')})"
    )


def _neuron_set(path):
    from neuronlab.select.neuron_set import NeuronSet

    return NeuronSet.load(path)


def _plan(path):
    from neuronlab.intervene.plan import Plan

    return Plan.load(path)


def _layers(path):
    from neuronlab.select.layers import LayerSelection

    return LayerSelection.load(path)


def _delta(path):
    from neuronlab.learn.finetune import Delta

    return Delta.load(path)


def _expertise(path):
    from neuronlab.select.experts import Expertise

    return Expertise.load(path)


def _attribution(path):
    from neuronlab.select.attribution import Attribution

    return Attribution.load(path)


_summary = lambda obj: obj.summary()  # noqa: E731

KINDS: dict[str, ArtifactKind] = {
    "neuronlab.stats/1": ArtifactKind("stats", _stats, _summary),
    "neuronlab.learned/1": ArtifactKind("learned intervention", _learned, _summary),
    "neuronlab.scaling/1": ArtifactKind("learned intervention", _learned, _summary),
    "neuronlab.vector/1": ArtifactKind("vector", _vector, _vector_summary),
    "neuronlab.neuron_set/1": ArtifactKind("neuron set", _neuron_set, _summary),
    "neuronlab.plan/1": ArtifactKind("plan", _plan, _summary),
    "neuronlab.plan/2": ArtifactKind("plan", _plan, _summary),
    "neuronlab.layers/1": ArtifactKind("layer selection", _layers, _summary),
    "neuronlab.delta/1": ArtifactKind("fine-tuning delta", _delta, _summary),
    "neuronlab.expertise/1": ArtifactKind("expertise", _expertise, _summary),
    "neuronlab.attribution/1": ArtifactKind("attribution", _attribution, _summary),
}


def artifact_format(path: str | Path) -> str:
    """The format tag of a neuronlab file (safetensors metadata or a JSON "format" key); a clear error otherwise."""
    from neuronlab.io import safetensors_format

    path = Path(path)
    if not path.is_file():
        raise NeuronlabError(f"no file at {path}")
    if path.stat().st_size == 0:
        raise NeuronlabError(f"{path} is empty")
    fmt = safetensors_format(path)
    if fmt is None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            fmt = data.get("format") if isinstance(data, dict) else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            fmt = None
    if fmt not in KINDS:
        known = ", ".join(sorted({k.what for k in KINDS.values()}))
        raise NeuronlabError(
            f"{path} is neither a stats file nor another neuronlab artifact ({known}); its format is {fmt!r}"
        )
    return fmt


def load_artifact(path: str | Path) -> object:
    return KINDS[artifact_format(path)].load(Path(path))


def describe(path: str | Path) -> str:
    """A few lines for people about any neuronlab artifact."""
    kind = KINDS[artifact_format(path)]
    return kind.summary(kind.load(Path(path)))
