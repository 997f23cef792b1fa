"""neuronlab moe record | lape: the experts and expert neurons of a mixture of experts, per language.

neuronlab moe record --model allenai/OLMoE-1B-7B-0924 --text-dir flores/ --pattern '*.devtest' --out experts.safetensors
neuronlab moe lape experts.safetensors --over experts --out experts.json          # language-specific experts
neuronlab moe lape experts.safetensors --over neurons --top-rate 0.01 --out neurons.json
neuronlab moe deactivate --model M --experts experts.json --text-dir held-out/ --out matrix.json   # each language's
neuronlab moe bake --model M --neurons neurons.json --language fr --out no-fr/    # French's expert neurons zeroed
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
    group,
    model_options,
    texts,
    writable,
)
from neuronlab.evaluate.moe import expert_deactivation_to_file
from neuronlab.intervene.moe import bake_experts_to_folder
from neuronlab.record.moe import ExpertRecordConfig, record_experts_to_file
from neuronlab.record.recorder import check_checkpoint
from neuronlab.select.lape import LapeConfig
from neuronlab.select.moe import moe_lape_to_file

app = group("Mixtures of experts: routing per language and the neurons inside each expert.")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="moe")


@app.command("record")
@friendly
@model_options()
@config_options(ExpertRecordConfig)
def record(
    model: ModelRef,
    out: Annotated[Path, typer.Option(help="Expert stats file to write (safetensors).")],
    cfg: ExpertRecordConfig,
    text: TextOpt = None,
    text_dir: TextDirOpt = None,
    pattern: PatternOpt = "*.txt",
    limit: Annotated[int | None, typer.Option(help="Use only the first N lines of each file.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue --out if it exists, never counting a text twice.")] = False,
) -> None:
    """Per language: how often each expert is chosen, and each expert neuron's firing count and sum."""
    writable(out)
    check_checkpoint(out, resume)  # before the model loads
    found = texts(text, text_dir, pattern, limit)
    loaded, tokenizer = model.load()
    stats = record_experts_to_file(loaded, tokenizer, found, out, cfg, resume=resume)
    typer.echo(stats.summary())
    typer.echo(f"wrote {out}")


@app.command("lape")
@friendly
@config_options(LapeConfig)
def lape(
    stats: Annotated[Path, typer.Argument(help="Expert stats from `neuronlab moe record`.")],
    out: Annotated[Path, typer.Option(help="JSON file of the experts or neurons found per language.")],
    cfg: LapeConfig,
    over: Annotated[str, typer.Option(help="experts (routing frequency) or neurons (firing rate).")] = "neurons",
    routed: Annotated[
        bool, typer.Option(help="Neurons: rate over the tokens routed to the expert (else over all tokens).")
    ] = True,
) -> None:
    """LAPE over experts or expert neurons: those specific to one language or a few."""
    found = moe_lape_to_file(stats, out, over, routed, cfg)  # type: ignore[arg-type]
    for lang, layers in found["languages"].items():
        typer.echo(f"{lang}: {sum(len(v) for v in layers.values())} {over} in layers {sorted(layers)}")
    typer.echo(f"wrote {out} (rate: {found['rate']})")


@app.command("bake")
@friendly
@model_options()
def bake(
    model: ModelRef,
    neurons: Annotated[Path, typer.Option(help="JSON from `neuronlab moe lape --over neurons`.")],
    language: Annotated[str, typer.Option(help="Whose expert neurons to change.")],
    out: Annotated[Path, typer.Option(help="Folder for the changed checkpoint (model and tokenizer).")],
    scale: Annotated[float, typer.Option(help="Multiply the neurons by this (0: silence them).")] = 0.0,
) -> None:
    """Write a language's expert neurons, scaled, into the experts' down projections: a plain checkpoint."""
    writable(out, folder=True)
    loaded, tokenizer = model.load()
    baked = bake_experts_to_folder(loaded, tokenizer, neurons, language, out, scale)
    typer.echo(f"{sum(len(v) for v in baked.values())} expert neurons of {language} scaled by {scale}; wrote {out}")


@app.command("deactivate")
@friendly
@model_options()
def deactivate(
    model: ModelRef,
    experts: Annotated[Path, typer.Option(help="JSON from `neuronlab moe lape --over experts`.")],
    out: Annotated[Path, typer.Option(help="JSON file of the perplexity matrix.")],
    text: TextOpt = None,
    text_dir: TextDirOpt = None,
    pattern: PatternOpt = "*.txt",
    limit: Annotated[int | None, typer.Option(help="Use only the first N lines of each file.")] = None,
    batch_size: Annotated[int, typer.Option(help="Rows a forward pass.")] = 8,
    max_length: Annotated[int, typer.Option(help="Tokens a row.")] = 512,
    how: Annotated[
        str, typer.Option(help="silence: the experts add nothing where chosen; forbid: the router picks others.")
    ] = "silence",
) -> None:
    """Silence (or forbid) each language's experts in turn and measure every language's perplexity."""
    writable(out)
    found = texts(text, text_dir, pattern, limit)
    loaded, tokenizer = model.load()
    matrix = expert_deactivation_to_file(
        loaded, tokenizer, experts, found, out, batch_size=batch_size, max_length=max_length, how=how
    )
    done = "forbidden" if how == "forbid" else "silenced"
    for target, change in matrix["change"].items():
        worst = max(change, key=lambda lang: change[lang])
        own = f"own {change[target]:+.1%}, " if target in change else ""
        typer.echo(f"{target}'s experts {done}: {own}most hurt {worst} {change[worst]:+.1%}")
    typer.echo(f"wrote {out}")
