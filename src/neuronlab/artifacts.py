"""Every artifact kind neuronlab writes, in one registry keyed by format tag: what it is, and how to load and
summarise it. Each module registers the kinds it writes, next to their format constants
(`register_artifact("stats", [FORMAT], Stats.load)`); `neuronlab/__init__.py` imports every such module, and Python
runs it before any submodule, so the table is full wherever it is read (this module imports none of them: they sit
above it). `neuronlab inspect` reads any artifact through `describe`:

    describe("stats.safetensors")      # "stats of ... at site act: 24 layers x 11008 neurons ..."
    load_artifact("neurons.json")      # a NeuronSet
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neuronlab.errors import NeuronlabError
from neuronlab.registry import Registry


@dataclass(frozen=True)
class ArtifactKind:
    what: str
    load: Callable[[Path], object]
    summary: Callable[[Any], str]


KINDS: Registry[ArtifactKind] = Registry("artifact format", ArtifactKind)


def register_artifact(
    what: str, formats: Iterable[str], load: Callable[[Path], object], summary: Callable[[Any], str] | None = None
) -> None:
    """Register a kind of file under each of its format tags (the current one and older ones it still reads);
    `summary` defaults to the loaded object's own `.summary()`."""
    kind = ArtifactKind(what, load, summary or (lambda obj: obj.summary()))
    for fmt in formats:
        KINDS.add(fmt, kind)


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
    if not isinstance(fmt, str) or fmt not in KINDS:
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
