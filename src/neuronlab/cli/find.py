"""neuronlab find lape | activated | attribution: select neurons from recorded statistics, or by attribution.

neuronlab find lape --stats s.safetensors --out lape.json
neuronlab find attribution -m M --text-dir corpus/ --like lape.json --scores attr.safetensors --out attr.json
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neuronlab.cli.common import (
    ModelRef,
    OutOpt,
    PatternOpt,
    StatsOpt,
    TextDirOpt,
    TextOpt,
    config_options,
    friendly,
    group,
    model_options,
    texts,
)
from neuronlab.errors import NeuronlabError
from neuronlab.select.attribution import AttributionConfig
from neuronlab.select.lape import LapeConfig
from neuronlab.select.runs import run_activated, run_attribution, run_lape

app = group("Select neurons from recorded statistics, or by attribution.")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="find")


def _show(ns, out) -> None:
    typer.echo(ns.summary())
    typer.echo(f"wrote {out}")


@app.command("lape")
@friendly
@config_options(LapeConfig)
def find_lape(stats: StatsOpt, out: OutOpt, cfg: LapeConfig) -> None:
    """Language-specific neurons by activation-probability entropy (LAPE)."""
    _show(run_lape(stats, out, cfg), out)


@app.command("activated")
@friendly
def find_activated(
    stats: StatsOpt,
    out: OutOpt,
    n_texts: Annotated[int, typer.Option(help="A neuron must be active (mean > 0) on each of this many texts.")] = 100,
) -> None:
    """Baseline: neurons active on every one of a language's first texts (needs --pooled-texts when recording)."""
    _show(run_activated(stats, out, n_texts), out)


@app.command("attribution")
@friendly
@model_options()
@config_options(AttributionConfig)
def find_attribution(
    model: ModelRef,
    out: OutOpt,
    cfg: AttributionConfig,
    text: TextOpt = None,
    text_dir: TextDirOpt = None,
    pattern: PatternOpt = "*.txt",
    limit: Annotated[int | None, typer.Option(help="Use only the first N lines of each file.")] = None,
    per_group: Annotated[int | None, typer.Option(help="Neurons kept a group.")] = None,
    like: Annotated[Path | None, typer.Option(help="Keep as many neurons a group as this set (e.g. LAPE's).")] = None,
    specific: Annotated[bool, typer.Option(help="Score for the group minus the best score for another group.")] = True,
    stats: Annotated[Path | None, typer.Option(help="Stats of the same model and site, for --baseline mean.")] = None,
    scores: Annotated[Path | None, typer.Option(help="Also save the scores (.safetensors).")] = None,
) -> None:
    """Neurons whose activation raises a group's log-likelihood most, by gradient x activation or integrated
    gradients (summed over the group's texts)."""
    if (per_group is None) == (like is None):
        raise NeuronlabError("give --per-group N or --like NEURONS.json (how many neurons a group keeps)")
    found = texts(text, text_dir, pattern, limit)
    attr, ns = run_attribution(model.load, found, out, cfg, per_group, like, specific, stats, scores)
    typer.echo(attr.summary())
    _show(ns, out)
