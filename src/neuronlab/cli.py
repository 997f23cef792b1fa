"""The `neuronlab` command. Every subcommand mirrors one Python function and has --help.

    neuronlab record --model M --text en=en.txt --text fr=fr.txt --out stats.safetensors
    neuronlab record --model M --text-dir flores/ --pattern '*.devtest' --out stats.safetensors --resume
    neuronlab inspect stats.safetensors
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated

import typer

from neuronlab.errors import NeuronlabError

app = typer.Typer(help="Find, steer and tune the neurons of transformer language models.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)  # fmt: skip


def _friendly(fn):
    """Print a NeuronlabError as one line and exit 2, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NeuronlabError as err:
            typer.secho(f"error: {err}", fg="red", err=True)
            raise typer.Exit(2) from None

    return wrapper


ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Hugging Face hub id or local folder.")]
DtypeOpt = Annotated[str | None, typer.Option(help="float32, float16 or bfloat16 (default: the checkpoint's).")]
DeviceOpt = Annotated[str | None, typer.Option(help="Device such as cuda:0; 'auto' spreads a large model.")]
RevisionOpt = Annotated[str | None, typer.Option(help="Branch, tag or commit, e.g. Pythia's step1000.")]


def _load(model: str, dtype: str | None, device: str | None, revision: str | None):
    from neuronlab.models.load import load_model

    if device == "auto":
        return load_model(model, dtype=dtype, device_map="auto", revision=revision)
    return load_model(model, dtype=dtype, device=device, revision=revision)


@app.command()
@_friendly
def record(
    model: ModelOpt,
    out: Annotated[Path, typer.Option(help="Stats file to write (safetensors).")],
    text: Annotated[list[str] | None, typer.Option(help="GROUP=FILE, one text per line; repeat per group.")] = None,
    text_dir: Annotated[Path | None, typer.Option(help="Folder of GROUP.txt files (see --pattern).")] = None,
    pattern: Annotated[str, typer.Option(help="File pattern in --text-dir; FLORES: '*.devtest'.")] = "*.txt",
    limit: Annotated[int | None, typer.Option(help="Use only the first N lines of each file.")] = None,
    site: Annotated[str, typer.Option(help="Site kind: act, neuron, ffn_out, attn_out or resid.")] = "act",
    batch_size: Annotated[int, typer.Option(help="Rows per forward pass.")] = 8,
    max_length: Annotated[int, typer.Option(help="Tokens per window; longer texts are split.")] = 512,
    truncate: Annotated[bool, typer.Option(help="Cut texts at --max-length instead of splitting them.")] = False,
    max_tokens: Annotated[int | None, typer.Option(help="Count at most this many tokens per group.")] = None,
    pooled_texts: Annotated[int, typer.Option(help="Keep per-text mean/max for the first N texts per group.")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue from --out if it exists, never counting a text twice.")] = False,
    checkpoint_every: Annotated[float, typer.Option(help="Seconds between checkpoints to --out.")] = 600.0,
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    revision: RevisionOpt = None,
) -> None:
    """Record per-neuron statistics of a site over texts grouped by language or concept."""
    from neuronlab.data.corpora import parse_group_files, read_text_dir
    from neuronlab.record.recorder import record as record_stats

    if out.exists() and not resume:
        raise NeuronlabError(f"{out} exists: pass --resume to continue it, or choose another --out")
    texts = parse_group_files(text or [])
    if text_dir is not None:
        for group, lines in read_text_dir(text_dir, pattern).items():
            if group in texts:
                raise NeuronlabError(f"group {group!r} is given twice")
            texts[group] = lines
    if not texts:
        raise NeuronlabError("no texts: pass --text GROUP=FILE (repeatable) or --text-dir DIR")
    if limit is not None:
        texts = {g: lines[:limit] for g, lines in texts.items()}
    loaded, tokenizer = _load(model, dtype, device, revision)
    stats = record_stats(
        loaded, tokenizer, texts, site=site, batch_size=batch_size, max_length=max_length, truncate=truncate,
        max_tokens=max_tokens, pooled_texts=pooled_texts, checkpoint=out, checkpoint_every=checkpoint_every,
    )  # fmt: skip
    typer.echo(stats.summary())
    typer.echo(f"wrote {out}")


@app.command()
@_friendly
def inspect(path: Annotated[Path, typer.Argument(help="A stats (.safetensors), neuron-set or plan (.json) file.")]) -> None:
    """Summarise a stats, neuron-set or plan file."""
    from neuronlab.intervene.plan import Plan
    from neuronlab.record.stats import Stats
    from neuronlab.select.neuron_set import NeuronSet

    if not path.is_file():
        raise NeuronlabError(f"no file at {path}")
    if path.stat().st_size == 0:
        raise NeuronlabError(f"{path} is empty")
    if path.suffix == ".safetensors":
        typer.echo(Stats.load(path).summary())
        return
    try:
        fmt = json.loads(path.read_text(encoding="utf-8")).get("format", "")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise NeuronlabError(f"{path} is neither a stats file (.safetensors) nor neuronlab JSON") from err
    if fmt.startswith("neuronlab.neuron_set"):
        typer.echo(NeuronSet.load(path).summary())
    elif fmt.startswith("neuronlab.plan"):
        plan = Plan.load(path)
        typer.echo(f"plan with {len(plan)} interventions")
        for iv in plan:
            typer.echo(f"  {type(iv).__name__} on {iv.site}, layers {iv.layers or 'all'}, positions {iv.positions}")
    else:
        raise NeuronlabError(f"{path} is JSON but not a neuronlab file (format {fmt!r})")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
