"""neuronlab record | inspect | view: statistics over grouped texts, a summary of any artifact, and the neuron browser.

neuronlab record --model M --text en=en.txt --text fr=fr.txt --out stats.safetensors
neuronlab record --model M --text-dir flores/ --pattern '*.devtest' --out stats.safetensors --resume
torchrun --nproc-per-node 2 -m neuronlab record --model M --text-dir corpus/ --out stats.safetensors
neuronlab record --model M --dataset en=wikimedia/wikipedia --subset 20231101.en --limit 100000 --out s.safetensors
neuronlab inspect stats.safetensors
neuronlab record --model M --text-dir corpus/ --contexts --out s.safetensors && neuronlab view --stats s.safetensors
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neuronlab.cli.common import (
    ModelRef,
    PatternOpt,
    TextDirOpt,
    TextOpt,
    config_options,
    friendly,
    model_options,
    texts,
    writable,
)
from neuronlab.record.recorder import RecordConfig


def register(app: typer.Typer) -> None:
    app.command("record")(record)
    app.command("inspect")(inspect)
    app.command("inspect-model")(inspect_model)
    app.command("view")(view)


@friendly
@model_options()
@config_options(RecordConfig)
def record(
    model: ModelRef,
    out: Annotated[Path, typer.Option(help="Stats file to write (safetensors); also the checkpoint.")],
    cfg: RecordConfig,
    text: TextOpt = None,
    text_dir: TextDirOpt = None,
    pattern: PatternOpt = "*.txt",
    limit: Annotated[int | None, typer.Option(help="Use only the first N lines of each file.")] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue from --out if it exists, never counting a text twice.")
    ] = False,
    dataset: Annotated[
        list[str] | None,
        typer.Option(
            help="GROUP=SOURCE: a data file (.txt .jsonl .csv .parquet) or "
            "a hub id read with `datasets`, streamed; repeatable."
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="Split of each --dataset.")] = "train",
    column: Annotated[str, typer.Option(help="Text column of each --dataset.")] = "text",
    subset: Annotated[str | None, typer.Option(help="Subset (config name) of each hub --dataset.")] = None,
) -> None:
    """Record per-neuron statistics of a site over texts grouped by language or concept."""
    from neuronlab.record.recorder import check_checkpoint, record_to_file

    check_checkpoint(out, resume)  # before the model loads
    writable(out)
    found = texts(text, text_dir, pattern, limit) if text or text_dir or not dataset else {}
    loaded, tokenizer = model.load()
    stats = record_to_file(
        loaded,
        tokenizer,
        found,
        out,
        cfg,
        resume=resume,
        datasets=dataset or [],
        split=split,
        column=column,
        subset=subset,
        limit=limit,
    )
    typer.echo(stats.summary())
    ranks = stats.meta.get("world_size", 1)
    typer.echo(f"wrote {out}" + (f" (recorded by {ranks} processes)" if ranks > 1 else ""))


@friendly
def inspect(
    path: Annotated[
        Path,
        typer.Argument(
            help="Any neuronlab artifact: stats, learned intervention or vector "
            "(.safetensors), neuron set or plan (.json)."
        ),
    ],
) -> None:
    """Summarise a stats, learned-intervention, vector, neuron-set or plan file."""
    from neuronlab.artifacts import describe

    typer.echo(describe(path))


@friendly
@model_options()
def inspect_model(model: ModelRef) -> None:
    """The ArchSpec of a model (the table's row, or derived from its modules), as code to paste, and whether its
    sites pass the identities on a probe forward (resid = hidden_states, h + attn + ffn = resid, ...)."""
    from neuronlab.models.load import load_model
    from neuronlab.models.resolve import describe_arch

    loaded, _ = load_model(model.name, dtype=model.dtype, device=model.device, revision=model.revision, check=False)
    about = describe_arch(loaded)
    failed = about["failed"]
    typer.echo(f"{about['model_type']}: {about['source']}")
    typer.echo(f"spec = {about['code']}")
    for what, why in about["not_served"].items():
        typer.echo(f"not served: {what}: {why}")
    typer.echo("proven on a probe forward" if not failed else "FAILS on a probe forward:\n  " + "\n  ".join(failed))
    if failed:
        raise typer.Exit(1)


@friendly
def view(
    stats: Annotated[Path, typer.Option(help="Stats recorded with --contexts.")],
    out: Annotated[Path, typer.Option(help="Folder for index.html (a static page: open it from disk).")] = Path("view"),
    neurons: Annotated[
        Path | None,
        typer.Option(help="Neuron set (.json) to show; default: the --limit neurons of lowest LAPE entropy."),
    ] = None,
    expertise: Annotated[
        Path | None, typer.Option(help="Expertise (.safetensors) of `experts find`: AP per concept.")
    ] = None,
    results: Annotated[
        Path | None,
        typer.Option(help="results.json of `neuronlab demo`: what zeroing a language's neurons did to perplexity."),
    ] = None,
    limit: Annotated[int, typer.Option(help="Show at most this many neurons (lowest score first).")] = 500,
) -> None:
    """Write a static neuron browser: per neuron its top contexts, activation probability per group and scores."""
    from neuronlab.report.language import view_from_files

    writable(out, folder=True)
    path = view_from_files(stats, out, neurons, expertise, results, limit)
    typer.echo(f"wrote {path} (open it in a browser; a neuron's page is {path.name}#L<layer>N<neuron>)")
