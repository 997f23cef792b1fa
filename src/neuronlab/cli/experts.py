"""neuronlab experts find | align: expert neurons per concept and their alignment with human similarity."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neuronlab.cli.common import BatchOpt, ModelRef, PlotOpt, friendly, group, model_options, writable
from neuronlab.errors import NeuronlabError

TauOpt = Annotated[float, typer.Option(help="Experts: AP at least tau of the way from chance to 1.")]
app = group("Expert neurons: concepts, AP per neuron, alignment with human similarity (Fedzechkina et al. 2025).")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="experts")


@app.command("find")
@friendly
@model_options()
def experts_find(
    model: ModelRef,
    out: Annotated[Path, typer.Option(help="Folder for responses, expertise, experts.json and the concepts used.")],
    concepts: Annotated[
        Path | None, typer.Option(help="Concept file or folder: JSON/JSONL {concept, positive, negative?}.")
    ] = None,
    words: Annotated[
        Path | None,
        typer.Option(
            help="Or a file of concept words (one a line, or a ratings file): the model writes their sentences."
        ),
    ] = None,
    per_concept: Annotated[int, typer.Option(help="Sentences the model writes per word (--words).")] = 20,
    prompt: Annotated[
        list[str] | None,
        typer.Option(
            help="Prompt template with {word} for a base model (repeatable; default: few-shot word/sentence examples)."
        ),
    ] = None,
    chat: Annotated[
        bool | None,
        typer.Option(
            "--chat/--no-chat", help="Ask through the chat template (default: when the model is an instruct model)."
        ),
    ] = None,
    site: Annotated[str, typer.Option(help="Site kind: act, neuron, ffn_out, attn_out or resid.")] = "act",
    pool: Annotated[str, typer.Option(help="max or mean over each sentence's tokens.")] = "max",
    tau: TauOpt = 0.5,
    float32: Annotated[
        bool, typer.Option(help="Keep responses in float32 (default float16: half the memory).")
    ] = False,
    batch_size: BatchOpt = 16,
    seed: Annotated[int, typer.Option(help="Seed of the sampled negatives and of the generated sentences.")] = 0,
    negatives: Annotated[
        float,
        typer.Option(
            help="Negatives per positive, sampled from the other concepts' sentences where a concept gives none."
        ),
    ] = 1.0,
    drop_unwritten: Annotated[
        bool, typer.Option(help="Leave out words the model writes no sentence for (instead of stopping).")
    ] = False,
) -> None:
    """Pooled responses of every neuron to each concept's sentences, AP/AUROC per concept, experts at tau."""
    import torch

    from neuronlab.select.find_experts import find_experts

    writable(out, folder=True)
    loaded, tok = model.load()
    ex = find_experts(
        loaded,
        tok,
        out,
        concepts,
        words,
        per_concept,
        prompt,
        chat,
        site,
        pool,
        tau,
        torch.float32 if float32 else torch.float16,
        batch_size,
        seed,
        negatives,
        drop_unwritten,
    )
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
    from neuronlab.evaluate.concept_steering import concept_steering
    from neuronlab.io import write_json
    from neuronlab.models.load import require_same_model
    from neuronlab.select.experts import Expertise

    writable(out)
    ex = Expertise.load(experts / "expertise.safetensors")
    loaded, tok = model.load()
    require_same_model(ex.meta.get("model"), loaded, "the expertise")
    result = concept_steering(loaded, tok, ex, concept, k)
    write_json(out, result)
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
    from neuronlab.analyze.alignment import align, jaccard_matrix, odd_one_out, read_ratings, read_triplets
    from neuronlab.io import write_bytes, write_json
    from neuronlab.report.plots import lines
    from neuronlab.select.experts import Expertise
    from neuronlab.select.find_experts import load_baselines

    writable(out, folder=True)
    writable(plot)
    ex = Expertise.load(experts / "expertise.safetensors")
    baselines = load_baselines(experts)
    result = align(ex, read_ratings(human), baselines=baselines)
    sim = jaccard_matrix(ex.experts(result["tau"]), ex.concepts)
    if triplets is not None:
        result["odd_one_out"] = odd_one_out(sim, ex.concepts, read_triplets(triplets))
    write_json(out / "alignment.json", result)
    ci = {k: "[{:.2f}, {:.2f}]".format(*v) for k, v in result["intervals"].items()}
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
    taus = list(result["jaccard"])
    sweep = lines(
        {"Jaccard of experts": list(result["jaccard"].values())},
        taus,
        "tau",
        "Spearman vs people",
        "alignment with human similarity",
    )
    if plot is not None:
        write_bytes(plot, sweep)
    if report:
        _report(out / "alignment.html", ex, sim, result, sweep, human)
    typer.echo(f"wrote {out}/alignment.json" + (" and alignment.html" if report else ""))


def _report(path: Path, ex, sim, result: dict, sweep: bytes, human: Path) -> None:
    from neuronlab.analyze.alignment import concept_tree
    from neuronlab.report.html import Report
    from neuronlab.report.plots import dendrogram, similarity

    rep = Report("neuronlab: expert neurons and human similarity")
    model = ex.meta.get("model", {})
    rep.text(
        "Setup",
        f"<p>Model <code>{model.get('name_or_path') or '?'}</code>, site {ex.meta.get('site')}, "
        f"{ex.meta.get('pool')} pooling, {len(ex.concepts)} concepts, {ex.meta.get('sentences')} "
        f"sentences; ratings <code>{human.name}</code>, {result['pairs']} rated pairs covered.</p>",
    )
    rows = [{"similarity": f"Jaccard of experts, tau {t}", "Spearman": rho} for t, rho in result["jaccard"].items()]
    rows += [
        {"similarity": k.replace("_", " "), "Spearman": result[k]}
        for k in ("ap_cosine", "input_embedding", "sentence_embedding")
        if k in result
    ]
    rep.table("Alignment with people", rows)
    rep.figure("Spearman against the expert threshold", sweep)
    rep.figure(f"Jaccard of expert sets (tau {result['tau']})", similarity(sim.tolist(), ex.concepts, "Jaccard"))
    tree = concept_tree(sim, ex.concepts)
    rep.figure("Concepts clustered by expert overlap", dendrogram(tree, ex.concepts, "average linkage on 1 - Jaccard"))
    rep.save(path)


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
    from neuronlab.analyze.alignment import concept_tree, domain_overlap, jaccard_matrix, read_domains
    from neuronlab.io import write_bytes, write_json
    from neuronlab.report.plots import dendrogram
    from neuronlab.select.experts import Expertise

    writable(out, plot)
    ex = Expertise.load(experts / "expertise.safetensors")
    sim = jaccard_matrix(ex.experts(tau), ex.concepts)
    tree = concept_tree(sim, ex.concepts)
    if domains is not None:
        tree["domains"] = domain_overlap(sim, ex.concepts, read_domains(domains))
        d = tree["domains"]
        typer.echo(
            f"Jaccard within domains {d['within']:.3f} ({d['pairs_within']} pairs), between "
            f"{d['between']:.3f} ({d['pairs_between']} pairs)"
        )
    write_json(out, tree)
    typer.echo("order: " + " ".join(tree["order"]))
    if plot is not None:
        write_bytes(plot, dendrogram(tree, ex.concepts, f"concepts by expert overlap (tau {tau})"))


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
    from neuronlab.io import read_json, write_bytes, write_json
    from neuronlab.report.plots import lines

    writable(out, plot)
    rows = {}
    for spec in run:
        label, sep, folder = spec.partition("=")
        if not sep:
            raise NeuronlabError(f"--run {spec!r}: write it as LABEL=FOLDER")
        rows[label] = read_json(Path(folder) / "alignment.json", "alignment")
    keys = [
        k
        for k in ("spearman", "ap_cosine", "input_embedding", "sentence_embedding")
        if all(k in r for r in rows.values())
    ]
    trend = {k: [rows[label][k] for label in rows] for k in keys}
    write_json(out, {"checkpoints": list(rows), **trend})
    for label, r in rows.items():
        typer.echo(f"{label}: " + "  ".join(f"{k} {r[k]:.3f}" for k in keys))
    if plot is not None:
        write_bytes(plot, lines(trend, list(rows), "checkpoint", "Spearman vs people", "alignment across training"))
