"""One kind of table for everything neuronlab looks up by name: architectures, learned-intervention methods,
intervention kinds, artifact formats, contrast tasks, steering variants, prompt templates, concept-steering modes,
dtypes and packaged models.

A Registry is a read-only mapping. Entries are added with `add` or with `register` as a decorator; a name that is
taken is refused unless `replace=True` says so; an entry of the wrong type is refused; an unknown name raises one
NeuronlabError that lists the names and suggests the closest ("did you mean ..."). `names()` gives the text for
`--help` and error messages.

    registry = Registry("steering variant")
    registry.add("zero", make_zero)

    @registry.register("scale")
    def make_scale(...): ...
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from neuronlab.errors import NeuronlabError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Named entries of one kind (`what` names the kind in messages); `base`, when given, is the type (or, for
    classes, the base class) every entry must have."""

    def __init__(
        self, what: str, base: type | None = None, classes: bool = False, entries: Mapping[str, T] | None = None
    ) -> None:
        self.what, self.base, self.classes = what, base, classes
        self._entries: dict[str, T] = {}
        for name, entry in (entries or {}).items():
            self.add(name, entry)

    def add(self, name: str, entry: T, replace: bool = False) -> T:
        if not isinstance(name, str) or not name:
            raise NeuronlabError(f"a {self.what} needs a non-empty name, not {name!r}")
        if self.base is not None:
            is_class = isinstance(entry, type) and issubclass(entry, self.base)
            if not (is_class if self.classes else isinstance(entry, self.base)):
                want = f"a subclass of {self.base.__name__}" if self.classes else f"a {self.base.__name__}"
                raise NeuronlabError(f"{self.what} {name!r} must be {want}, not {entry!r}")
        if name in self._entries and not replace:
            raise NeuronlabError(f"{self.what} {name!r} is already registered: pass replace=True to replace it")
        self._entries[name] = entry
        return entry

    def register(self, name: str, replace: bool = False) -> Callable[[T], T]:
        """Decorator: `@registry.register("name")` adds the decorated function or class."""

        def decorate(entry: T) -> T:
            return self.add(name, entry, replace)

        return decorate

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            close = difflib.get_close_matches(str(name), list(self._entries), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise NeuronlabError(f"unknown {self.what} {name!r}{hint}: use one of {self.names()}") from None

    def get(self, name: str, default: T | None = None) -> T | None:  # type: ignore[override]
        return self._entries.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> str:
        """The names, comma-separated, for help texts and messages."""
        return ", ".join(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}: {self.names()})"
