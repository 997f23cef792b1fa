"""neuronlab lens | arith extract | patch | ablate: the residual stream per layer and FFN outputs as additive
vectors (Merullo et al. 2024)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neuronlab.cli.common import JsonOutOpt, ModelRef, PlotOpt, friendly, group, model_options, writable
from neuronlab.errors import NeuronlabError
from neuronlab.io import write_bytes

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
    from neuronlab.analyze.lens import logit_lens
    from neuronlab.io import write_json
    from neuronlab.report.plots import lens_ranks

    if plot is not None and not target:
        raise NeuronlabError("--plot shows the target's rank: pass --target")
    writable(out, plot)
    loaded, tok = model.load()
    result = logit_lens(loaded, tok, prompt, target, k=k, site=site)
    for row, p in enumerate(prompt):
        typer.echo(f"{p!r}" + (f" -> {target[row]!r}" if target else ""))
        for layer, entry in result["layers"].items():
            top = "  ".join(f"{t!r} {pr:.3f}" for t, pr in entry["top"][row])
            rank = f"  target rank {entry['target_rank'][row]} p={entry['target_prob'][row]:.3f}" if target else ""
            typer.echo(f"  layer {layer:>3}: {top}{rank}")
    if out is not None:
        write_json(out, result)
    if plot is not None:
        write_bytes(plot, lens_ranks(result))


def _relation(pairs: Path, template: str, shots: int, limit: int | None) -> list[dict]:
    from neuronlab.analyze.arithmetic import read_pairs, relation_items

    items = relation_items(read_pairs(pairs), template, shots)
    return items if limit is None else items[:limit]


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
    from neuronlab.analyze.arithmetic import extract_o_vector, save_vector, score_relation
    from neuronlab.models.load import model_info

    writable(out)
    items = _relation(pairs, template, shots, limit)
    loaded, tok = model.load()
    _show("task", score_relation(loaded, tok, items))
    vector = extract_o_vector(loaded, tok, [i["prompt"] for i in items], layer)
    save_vector(
        out,
        vector,
        {
            "model": model_info(loaded),
            "layer": layer,
            "site": "ffn_out",
            "pairs": str(pairs),
            "template": template,
            "shots": shots,
            "prompts": len(items),
        },
    )
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
    from neuronlab.analyze.arithmetic import load_vector, patch_o_vector, read_pairs, score_relation
    from neuronlab.models.load import require_same_model
    from neuronlab.report.plots import patching

    writable(plot)
    vec, meta = load_vector(vector)
    found = read_pairs(pairs)[:limit] if limit else read_pairs(pairs)
    items = [{"prompt": f"{nonsense} {x}", "target": f" {y}"} for x, y in found]
    loaded, tok = model.load()
    require_same_model(meta.get("model"), loaded, "the vector")
    plain = score_relation(loaded, tok, items)
    patched = patch_o_vector(loaded, tok, vec * scale, layer, items, mode)
    label = f"{mode} x{scale} at layers {layer}"
    _show("plain", plain)
    _show(label, patched)
    if plot is not None:
        write_bytes(plot, patching(plain, patched, label, nonsense))


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
    from neuronlab.analyze.arithmetic import ablate_from, score_relation
    from neuronlab.report.plots import ablation

    writable(plot)
    items = _relation(pairs, template, shots, limit)
    loaded, tok = model.load()
    _show("plain", score_relation(loaded, tok, items))
    scores = ablate_from(loaded, tok, items, mean=mean)
    for start, score in scores.items():
        _show(f"FFN outputs {'mean-ablated' if mean else 'zeroed'} from layer {start}", score)
    if plot is not None:
        write_bytes(plot, ablation(scores))
