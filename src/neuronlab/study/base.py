"""What a paper's study is: its settings with size presets, the figures it measures on one model, and the claims
it tests on all of them, each with a verdict by a rule stated on the page.

    @register_study
    class Arithmetic(Study):
        name, paper = "arithmetic", "Merullo et al. 2024"
        config = ArithmeticConfig
        sizes = {"smoke": {"pairs": 8}, "docs": {"pairs": 40}, "paper": {"pairs": 100}}
        def measure(self, model, tok, cfg, out, phases): ...     # one model's figures (JSON)
        def claims(self, figures, cfg): ...                      # [Claim], all models side by side

A study's figures are plain JSON; its claims are computed from them alone, so a report can be rendered again from a
stored results.json (`neuronlab report`), and the docs' tables from the stored results of the docs runs.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from neuronlab.config import Config
from neuronlab.errors import NeuronlabError
from neuronlab.registry import Registry

HOLDS, FAILS, UNSURE = "holds", "does not hold", "inconclusive"
SIZES = ("smoke", "docs", "paper")


@dataclass(frozen=True)
class Claim:
    """One claim of a paper, measured on every model: `values[model]` the number, `intervals[model]` its 95%
    interval (None where the study has none), `verdicts[model]` by `rule` (one sentence on the page)."""

    claim: str  # the paper's claim in one sentence
    measure: str  # what the number is
    rule: str  # how the verdict is reached
    values: dict[str, float | None]
    verdicts: dict[str, str]
    intervals: dict[str, list[float] | None] = field(default_factory=dict)
    figure: bytes | None = None  # one figure, all models side by side

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("claim", "measure", "rule", "values", "intervals", "verdicts")}


def above(value: float | None, bar: float, interval: list[float] | None = None) -> str:
    """The verdict for "the value exceeds `bar`": holds when it does (with its whole interval, where there is one),
    does not hold when it (its whole interval) does not, inconclusive when the interval straddles the bar or the
    value is missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return UNSURE
    if interval is None:
        return HOLDS if value > bar else FAILS
    low, high = interval
    return HOLDS if low > bar else FAILS if high <= bar else UNSURE


class Phases:
    """Wall-clock seconds of each named phase of a study: `with phases("lens"): ...`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.monotonic() - start, 2)


class Study(ABC):
    """A paper's study (see module doc). Subclasses set the class attributes and the two methods."""

    name: ClassVar[str]
    paper: ClassVar[str]  # "Merullo et al. 2024, arXiv 2305.16130"
    title: ClassVar[str]  # what the study asks, for the page's heading
    config: ClassVar[type[Config]]
    sizes: ClassVar[dict[str, dict[str, Any]]]  # smoke (a minute or two on 2 cores), docs (the docs' runs), paper

    def settings(self, size: str) -> Config:
        if size not in SIZES:
            raise NeuronlabError(f"unknown size {size!r}: use one of {', '.join(SIZES)}")
        return self.config(**self.sizes.get(size, {}))

    @abstractmethod
    def measure(self, model, tokenizer, cfg: Any, out: Path, phases: Phases) -> dict[str, Any]:
        """The study's figures on one model (JSON-ready); files it writes go under `out`."""

    def summary(self, figures: dict[str, dict[str, Any]], cfg: Any) -> dict[str, dict[str, str]]:
        """The study's key figures for a page's table, {what: {model: text}}, from the stored figures alone."""
        return {}

    @abstractmethod
    def claims(self, figures: dict[str, dict[str, Any]], cfg: Any) -> list[Claim]:
        """The paper's claims tested on every model's figures ({model name: figures})."""


STUDIES: Registry[Study] = Registry("study", Study)


def register_study(cls: type[Study]) -> type[Study]:
    """Class decorator: add a study by its `name` (duplicates refused)."""
    STUDIES.add(cls.name, cls())
    return cls
