"""neuronlab lens | arith extract | patch | ablate: the residual stream per layer and FFN outputs as additive
vectors (Merullo et al. 2024)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neuronlab.analyze.runs import run_arith_ablate, run_arith_extract, run_arith_patch, run_lens
from neuronlab.cli.common import JsonOutOpt, ModelRef, PlotOpt, friendly, group, model_options
from neuronlab.errors import NeuronlabError

app = group("FFN outputs as additive vectors: extract, patch, ablate (Merullo et al. 2024).")
PairsOpt = Annotated[Path, typer.Option(help="Pairs: CSV (first two columns, header) or JSON [{input, output}].")]
TemplateOpt = Annotated[str, typer.Option(help="Prompt template with {x} and a final {y}.")]
ShotsOpt = Annotated[int, typer.Option(help="In-context examples per prompt.")]
LimitOpt = Annotated[int | None, typer.Option(help="Use only the first N pairs.")]


def register(root: typer.Typer) -> None:
    root.command("lens")(lens)
    root.add_typer(app, name="arith")


@friendly
@model_options()
def lens(
    model: ModelRef,
    prompt: Annotated[list[str], typer.Option(help="Prompt to decode at its last position; repeatable.")],
    target: Annotated[list[str] | None, typer.Option(help="Expected next text, one per prompt (rank shown).")] = None,
    k: Annotated[int, typer.Option(help="Top tokens shown per layer.")] = 3,
    site: Annotated[str, typer.Option(help="resid (the stream after each layer), ffn_out or attn_out.")] = "resid",
    out: JsonOutOpt = None,
    plot: PlotOpt = None,
) -> None:
    """Logit lens: decode each layer's residual stream (or block output) through the final norm and unembedding."""
    if plot is not None and not target:
        raise NeuronlabError("--plot shows the target's rank: pass --target")
    result = run_lens(model.load, prompt, target, k=k, site=site, out=out, plot=plot)
    for row, p in enumerate(prompt):
        typer.echo(f"{p!r}" + (f" -> {target[row]!r}" if target else ""))
        for layer, entry in result["layers"].items():
            top = "  ".join(f"{t!r} {pr:.3f}" for t, pr in entry["top"][row])
            rank = f"  target rank {entry['target_rank'][row]} p={entry['target_prob'][row]:.3f}" if target else ""
            typer.echo(f"  layer {layer:>3}: {top}{rank}")


def _show(label: str, score: dict) -> None:
    typer.echo(
        f"{label}: accuracy {score['accuracy']:.3f}  exact {score['exact']:.3f}  "
        f"reciprocal rank {score['reciprocal_rank']:.3f}  multi-token targets {score['multi_token']:.0%}"
    )


@app.command("extract")
@friendly
@model_options()
def arith_extract(
    model: ModelRef,
    pairs: PairsOpt,
    layer: Annotated[int, typer.Option(help="Layer whose FFN output to take (last position).")],
    out: Annotated[Path, typer.Option(help="Vector file to write (safetensors).")],
    template: TemplateOpt = "{x}: {y}",
    shots: ShotsOpt = 2,
    limit: LimitOpt = None,
) -> None:
    """Mean FFN output at the last position of the relation prompts: the relation's o-vector."""
    task, vector = run_arith_extract(model.load, pairs, layer, out, template, shots, limit)
    _show("task", task)
    typer.echo(f"o-vector of layer {layer}: norm {vector.norm():.3f}; wrote {out}")


@app.command("patch")
@friendly
@model_options()
def arith_patch(
    model: ModelRef,
    vector: Annotated[Path, typer.Option(help="Vector file from `neuronlab arith extract`.")],
    pairs: PairsOpt,
    layer: Annotated[list[int], typer.Option(help="Layer(s) whose FFN output gets the vector; repeatable.")],
    nonsense: Annotated[
        str, typer.Option(help="Words before each input, so only the vector can carry the relation.")
    ] = "table mug free",
    mode: Annotated[str, typer.Option(help="add or replace.")] = "add",
    scale: Annotated[float, typer.Option(help="Multiply the vector by this.")] = 1.0,
    limit: LimitOpt = None,
    plot: PlotOpt = None,
) -> None:
    """Write an o-vector into other prompts ("table mug free Poland") and see if the target becomes top-1."""
    found = run_arith_patch(model.load, vector, pairs, layer, nonsense, mode, scale, limit, plot)
    _show("plain", found["plain"])
    _show(found["label"], found["patched"])


@app.command("ablate")
@friendly
@model_options()
def arith_ablate(
    model: ModelRef,
    pairs: PairsOpt,
    template: TemplateOpt = "{x}: {y}",
    shots: ShotsOpt = 2,
    limit: LimitOpt = None,
    mean: Annotated[bool, typer.Option(help="Mean-ablate (set to the mean FFN output) instead of zeroing.")] = False,
    plot: PlotOpt = None,
) -> None:
    """Task accuracy with every FFN output from layer l on set to zero (or its mean), for each l."""
    plain, scores = run_arith_ablate(model.load, pairs, template, shots, limit, mean, plot)
    _show("plain", plain)
    for start, score in scores.items():
        _show(f"FFN outputs {'mean-ablated' if mean else 'zeroed'} from layer {start}", score)
