"""Config dataclasses carry their help text in field metadata; the CLI builds its options from them.

@dataclass(frozen=True)
class LapeConfig:
    top_rate: float = option(0.01, "share of all neurons kept")
"""

from __future__ import annotations

from dataclasses import field, fields, replace
from typing import Any, TypeVar

from neuronlab.errors import NeuronlabError

T = TypeVar("T")


def option(default, help: str, cli: str | None = None):
    """A dataclass field with a default and the help text the command line shows for it (`cli`: the option's
    name where it is not --field-name)."""
    return field(default=default, metadata={"help": help, **({"cli": cli} if cli else {})})


def configured(cls: type[T], config: T | None, overrides: dict[str, Any], what: str) -> T:
    """The one convention for settings: a function takes its config object, or the config's fields as keywords
    (`record(model, tok, texts, RecordConfig(batch_size=4))` or `record(model, tok, texts, batch_size=4)`); the
    defaults live only in the config class. An unknown keyword gets one error naming the settings."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise NeuronlabError(f"{what} has no setting {', '.join(unknown)}: its settings are {', '.join(sorted(names))}")
    if config is not None and not isinstance(config, cls):
        raise NeuronlabError(f"{what} takes a {cls.__name__} (or its fields as keywords), not {config!r}")
    base = config if config is not None else cls()
    return replace(base, **overrides) if overrides else base  # type: ignore[type-var]
