"""Config dataclasses carry their help text in field metadata; the CLI builds its options from them.

@dataclass(frozen=True)
class LapeConfig:
    top_rate: float = option(0.01, "share of all neurons kept")
"""

from __future__ import annotations

from dataclasses import field


def option(default, help: str, cli: str | None = None):
    """A dataclass field with a default and the help text the command line shows for it (`cli`: the option's
    name where it is not --field-name)."""
    return field(default=default, metadata={"help": help, **({"cli": cli} if cli else {})})
