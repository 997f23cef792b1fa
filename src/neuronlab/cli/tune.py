"""neuronlab layers | finetune | merge: SLAM (Fan et al. 2025): choose the layers that handle languages, fine-tune
only their FFNs, write the result into a plain checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neuronlab.cli.common import ModelRef, PlotOpt, StatsOpt, config_options, friendly, model_options
from neuronlab.learn.finetune import FinetuneConfig
from neuronlab.learn.slam import run_finetune, run_layers, run_merge
from neuronlab.select.layers import LayerConfig


def register(app: typer.Typer) -> None:
    app.command("layers")(layers)
    app.command("finetune")(finetune)
    app.command("merge")(merge)


@friendly
@config_options(LayerConfig)
def layers(
    stats: StatsOpt,
    out: Annotated[Path, typer.Option(help="Layer selection to write (JSON).")],
    cfg: LayerConfig,
    plot: PlotOpt = None,
) -> None:
    """Choose the k layers whose activated neurons differ most between languages (SLAM's MSD)."""
    sel = run_layers(stats, out, cfg, plot)
    typer.echo(sel.summary())
    typer.echo(f"wrote {out}" + (f" and {plot}" if plot is not None and sel.per_language else ""))


@friendly
@config_options(FinetuneConfig)
@model_options()
def finetune(
    model: ModelRef,
    layers: Annotated[str, typer.Option(help="layers.json from `neuronlab layers`, a range 0-5, or a list 1,3,5.")],
    data: Annotated[Path, typer.Option(help="JSONL items {prompt, response} (or {instruction, output}).")],
    out: Annotated[Path, typer.Option(help="Folder for delta.safetensors, delta.json and the Trainer's checkpoints.")],
    cfg: FinetuneConfig,
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint in --out.")] = True,
) -> None:
    """Fine-tune only the FFNs of the chosen layers with the Hugging Face Trainer; save only the tuned tensors."""
    delta = run_finetune(model.load, layers, data, out, cfg, resume)
    typer.echo(delta.summary())
    typer.echo(f"wrote {out}/delta.safetensors and delta.json")


@friendly
@model_options()
def merge(
    model: ModelRef,
    delta: Annotated[Path, typer.Option(help="Folder from `neuronlab finetune` (or its delta.safetensors).")],
    out: Annotated[
        Path,
        typer.Option(help="Folder for the merged Hugging Face checkpoint (an earlier checkpoint there is replaced)."),
    ],
) -> None:
    """Write a delta into its base model and save a plain Hugging Face checkpoint."""
    typer.echo(f"{run_merge(model.load, delta, out).summary()}\nwrote {out}")
