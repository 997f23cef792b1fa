"""neuronlab layers | finetune | merge: SLAM (Fan et al. 2025): choose the layers that handle languages, fine-tune
only their FFNs, write the result into a plain checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neuronlab.cli.common import ModelRef, PlotOpt, StatsOpt, config_options, friendly, model_options, writable
from neuronlab.errors import NeuronlabError
from neuronlab.io import write_bytes
from neuronlab.learn.finetune import FinetuneConfig
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
    from neuronlab.record.stats import Stats
    from neuronlab.report.plots import layer_scores
    from neuronlab.select.layers import select_layers

    writable(out, plot)
    sel = select_layers(Stats.load(stats), cfg)
    sel.save(out)
    typer.echo(sel.summary())
    if plot is not None and sel.per_language:
        write_bytes(plot, layer_scores(sel))
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
    from neuronlab.learn.finetune import finetune as run
    from neuronlab.learn.finetune import read_sft
    from neuronlab.models.sites import decoder_layers
    from neuronlab.select.layers import parse_layers

    writable(out, folder=True)
    items = read_sft(data)
    loaded, tok = model.load()
    chosen, selection = parse_layers(layers, len(decoder_layers(loaded)))
    if selection is not None:
        selection.check_model(loaded)
    delta = run(loaded, tok, items, chosen, cfg, out, resume=resume)
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
    from neuronlab.io import atomic_folder
    from neuronlab.learn.finetune import Delta
    from neuronlab.learn.finetune import merge as merge_delta

    if out.is_dir() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise NeuronlabError(f"{out} holds files but no checkpoint (config.json): choose a new or empty folder")
    writable(out, folder=True)
    loaded_delta = Delta.load(delta)
    loaded, tok = model.load()
    merged = merge_delta(loaded, loaded_delta)
    atomic_folder(out, lambda tmp: (merged.save_pretrained(tmp), tok.save_pretrained(tmp)))  # whole, or as it was
    typer.echo(f"{loaded_delta.summary()}\nwrote {out}")
