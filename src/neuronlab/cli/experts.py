"""neuronlab experts find | align: expert neurons per concept and their alignment with human similarity."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neuronlab.analyze.find_experts import FindExpertsConfig, find_experts
from neuronlab.cli.common import ModelRef, PlotOpt, config_options, friendly, group, model_options, writable

TauOpt = Annotated[float, typer.Option(help="Experts: AP at least tau of the way from chance to 1.")]
app = group("Expert neurons: concepts, AP per neuron, alignment with human similarity (Fedzechkina et al. 2025).")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="experts")


@app.command("find")
@friendly
@model_options()
@config_options(FindExpertsConfig)
def experts_find(
    model: ModelRef,
    out: Annotated[Path, typer.Option(help="Folder for responses, expertise, experts.json and the concepts used.")],
    cfg: FindExpertsConfig,
    concepts: Annotated[
        Path | None, typer.Option(help="Concept file or folder: JSON/JSONL {concept, positive, negative?}.")
    ] = None,
    words: Annotated[
        Path | None,
        typer.Option(
            help="Or a file of concept words (one a line, or a ratings file): the model writes their sentences."
        ),
    ] = None,
) -> None:
    """Pooled responses of every neuron to each concept's sentences, AP/AUROC per concept, experts at tau."""
    writable(out, folder=True)
    loaded, tok = model.load()
    ex = find_experts(loaded, tok, out, concepts, words, cfg)
    typer.echo(ex.summary())
    typer.echo(f"wrote {out}/concepts.jsonl, responses.safetensors, expertise.safetensors, experts.json")


@app.command("steer")
@friendly
@model_options()
def experts_steer(
    model: ModelRef,
    experts: Annotated[Path, typer.Option(help="Folder from `neuronlab experts find` (same model).")],
    out: Annotated[Path, typer.Option(help="steering.json to write.")],
    concept: Annotated[list[str] | None, typer.Option(help="Concept to steer (repeatable; default: all).")] = None,
    k: Annotated[int, typer.Option(help="Experts per concept: the top k by AP (by AUROC for dampen).")] = 50,
) -> None:
    """Force (at every / the last position), zero and dampen a concept's experts; probability of its word."""
    from neuronlab.analyze.expert_study import steer_experts

    writable(out)
    loaded, tok = model.load()
    result = steer_experts(loaded, tok, experts, out, concept, k)
    for mode, m in result["modes"].items():
        typer.echo(
            f"{mode}: word more likely for {m['raised']:.0%} of {len(result['concepts'])} concepts; "
            f"probability x{m['geometric_mean_ratio']:.2f} (geometric mean)"
        )
    typer.echo(f"wrote {out}")


@app.command("align")
@friendly
def experts_align(
    experts: Annotated[Path, typer.Option(help="Folder from `neuronlab experts find`.")],
    human: Annotated[Path, typer.Option(help="Ratings: `word1 word2 score` lines (WordSim-353, SimLex-999, MEN).")],
    out: Annotated[Path, typer.Option(help="Folder for alignment.json (and alignment.html with --report).")],
    triplets: Annotated[
        Path | None, typer.Option(help="THINGS odd-one-out triplets (CSV) to compare with people's choices too.")
    ] = None,
    report: Annotated[
        bool, typer.Option(help="Also write alignment.html: Jaccard matrix, Spearman against tau, dendrogram.")
    ] = False,
    plot: PlotOpt = None,
) -> None:
    """Spearman between expert-overlap (Jaccard) similarity of concepts and human similarity ratings."""
    from neuronlab.analyze.expert_study import align_experts

    result = align_experts(experts, human, out, triplets, report, plot)
    ci = {k: "[{:.2f}, {:.2f}]".format(*v) for k, v in result["intervals"].items()}
    baselines = [k for k in ("input_embedding", "sentence_embedding") if k in result]
    typer.echo(
        f"Spearman (Jaccard of experts, tau {result['tau']}): {result['spearman']:.3f} {ci['spearman']} over "
        f"{result['pairs']} rated pairs; AP cosine {result['ap_cosine']:.3f} {ci['ap_cosine']}"
        + "".join(f"; {k.replace('_', ' ')} {result[k]:.3f} {ci[k]}" for k in baselines)
    )
    for t, rho in result["jaccard"].items():
        typer.echo(f"  tau {t}: {rho:.3f} ({result['experts'][t]} experts)")
    if "odd_one_out" in result:
        o = result["odd_one_out"]
        typer.echo(
            f"odd one out: agreement {o['agreement']:.3f} with people over {o['triplets']} triplets (chance 0.333)"
        )
    typer.echo(f"wrote {out}/alignment.json" + (" and alignment.html" if report else ""))


@app.command("tree")
@friendly
def experts_tree(
    experts: Annotated[Path, typer.Option(help="Folder from `neuronlab experts find`.")],
    out: Annotated[Path, typer.Option(help="tree.json to write.")],
    tau: TauOpt = 0.5,
    domains: Annotated[
        Path | None,
        typer.Option(
            help="word -> domain: THINGS' words.csv or `word<TAB>domain` lines (within- vs between-domain overlap)."
        ),
    ] = None,
    plot: PlotOpt = None,
) -> None:
    """Hierarchical clustering of concepts by expert overlap; within- versus between-domain Jaccard."""
    from neuronlab.analyze.expert_study import expert_tree

    tree = expert_tree(experts, out, tau, domains, plot)
    if "domains" in tree:
        d = tree["domains"]
        typer.echo(
            f"Jaccard within domains {d['within']:.3f} ({d['pairs_within']} pairs), between "
            f"{d['between']:.3f} ({d['pairs_between']} pairs)"
        )
    typer.echo("order: " + " ".join(tree["order"]))


@app.command("trend")
@friendly
def experts_trend(
    run: Annotated[
        list[str],
        typer.Option(
            help="LABEL=FOLDER of `experts align` (one per checkpoint, e.g. "
            "step1000=al-1000/), in training order; repeatable."
        ),
    ],
    out: Annotated[Path, typer.Option(help="trend.json to write.")],
    plot: PlotOpt = None,
) -> None:
    """Alignment across training checkpoints: run `experts find --revision R` and `experts align` per checkpoint,
    then gather them here."""
    from neuronlab.analyze.expert_study import alignment_trend

    trend = alignment_trend(run, out, plot)
    keys = [k for k in trend if k not in ("checkpoints", "rows")]
    for label, r in trend["rows"].items():
        typer.echo(f"{label}: " + "  ".join(f"{k} {r[k]:.3f}" for k in keys))
