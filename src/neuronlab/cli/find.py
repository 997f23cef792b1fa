"""neuronlab find lape | activated: select neurons from recorded statistics."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from neuronlab.cli.common import OutOpt, StatsOpt, config_options, friendly, group, writable
from neuronlab.select.lape import LapeConfig

app = group("Select neurons from recorded statistics.")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="find")


def _write(ns, out) -> None:
    ns.save(out)
    typer.echo(ns.summary())
    typer.echo(f"wrote {out}")


@app.command("lape")
@friendly
@config_options(LapeConfig)
def find_lape(stats: StatsOpt, out: OutOpt, cfg: LapeConfig) -> None:
    """Language-specific neurons by activation-probability entropy (LAPE)."""
    from neuronlab.record.stats import Stats
    from neuronlab.select.lape import lape

    writable(out)
    _write(lape(Stats.load(stats), **asdict(cfg)), out)


@app.command("activated")
@friendly
def find_activated(
    stats: StatsOpt,
    out: OutOpt,
    n_texts: Annotated[int, typer.Option(help="A neuron must be active (mean > 0) on each of this many texts.")] = 100,
) -> None:
    """Baseline: neurons active on every one of a language's first texts (needs --pooled-texts when recording)."""
    from neuronlab.record.stats import Stats
    from neuronlab.select.lape import activated

    writable(out)
    _write(activated(Stats.load(stats), n_texts), out)
