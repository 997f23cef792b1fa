"""Config dataclasses carry their help text in field metadata; the CLI builds its options from them.

@dataclass(frozen=True)
class LapeConfig(Config):
    top_rate: float = option(0.01, "share of all neurons kept")
    pool: Literal["max", "mean"] = option("max", "...")     # a fixed choice: checked when the config is built
"""

from __future__ import annotations

import importlib.metadata
import types
import typing
from dataclasses import asdict, field, fields, replace
from typing import Any, Literal, TypeVar

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


def _choices(hint) -> tuple | None:
    """The values a `Literal[...]` (or `Literal[...] | None`) field admits; None for any other type."""
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [_choices(a) for a in typing.get_args(hint) if a is not type(None)]
        if len(inner) == 1 and inner[0] is not None:
            return (*inner[0], None)
    return None


def package_version() -> str:
    try:
        return importlib.metadata.version("neuronlab")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


class Config:
    """The base of every settings dataclass: fixed choices are typed `Literal[...]` and checked when a config is
    built (then `check()`, each config's own range checks); saved with the class name and the package version, and
    read back with one error for a field the class does not have.

        cfg = LapeConfig(top_rate=0.02)
        cfg.to_dict()                 # {"config": "LapeConfig", "neuronlab": "0.1.0", "top_rate": 0.02, ...}
        LapeConfig.from_dict(data)    # an unknown field, or another config's settings: one clear error
    """

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):  # type: ignore[arg-type]
            choices, value = _choices(hints[f.name]), getattr(self, f.name)
            if choices is not None and value not in choices:
                shown = ", ".join(str(c) for c in choices)
                raise NeuronlabError(f"{type(self).__name__}.{f.name} must be one of {shown}, not {value!r}")
        self.check()

    def check(self) -> None:
        """Checks beyond the fixed choices (ranges, combinations); raise NeuronlabError naming the setting."""

    def to_dict(self) -> dict[str, Any]:
        return {"config": type(self).__name__, "neuronlab": package_version(), **asdict(self)}  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        saved = data.get("config", cls.__name__)
        if saved != cls.__name__:
            raise NeuronlabError(f"these are the settings of a {saved}, not of a {cls.__name__}")
        values = {k: v for k, v in data.items() if k not in ("config", "neuronlab")}
        return configured(
            cls, None, {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}, cls.__name__
        )


C = TypeVar("C", bound=Config)


def parse_settings(cls: type[Config], items: list[str]) -> dict[str, Any]:
    """`["pairs=20", "relations=capital,past_tense"]` as typed settings of the config class `cls` (the command
    line's `--set NAME=VALUE`); one error naming an unknown setting or a value that does not read as its type."""
    hints, names = typing.get_type_hints(cls), {f.name for f in fields(cls)}  # type: ignore[arg-type]
    out: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in names:
            raise NeuronlabError(f"--set {item!r}: write NAME=VALUE with a setting of {', '.join(sorted(names))}")
        out[name] = _typed(hints[name], text.strip(), name)
    return out


def _typed(hint, text: str, name: str) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if text.lower() == "none" and type(None) in typing.get_args(hint):
        return None
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        return _typed(args[0], text, name)
    if typing.get_origin(hint) is tuple:
        kind = typing.get_args(hint)[0]
        return tuple(_typed(kind, part.strip(), name) for part in text.split(",") if part.strip())
    if typing.get_origin(hint) is Literal:
        return text
    kind = hint if isinstance(hint, type) else str
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        return kind(text)
    except ValueError:
        raise NeuronlabError(f"--set {name}={text}: not a {kind.__name__}") from None
