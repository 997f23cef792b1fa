"""The expert-neuron study on the folders `find_experts` writes: alignment with human similarity ratings (and
THINGS odd-one-out triplets), the concept tree, alignment across training checkpoints, and what steering the
experts does. Each function reads its inputs, writes its JSON (and figures) and returns the result; the
`neuronlab experts align|tree|trend|steer` commands are these calls.

    result = align_experts("ex/", "EN-SIMLEX-999.txt", "al/", report=True)   # al/alignment.json, alignment.html
    tree = expert_tree("ex/", "tree.json", tau=0.5, domains="words.csv")
    trend = alignment_trend({"step0": "al-0/", "step1000": "al-1000/"}, "trend.json")
    result = steer_experts(model, tok, "ex/", "steering.json", ["dog"], k=50)   # force, zero, dampen experts
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from neuronlab.analyze.alignment import (
    align,
    concept_tree,
    domain_overlap,
    jaccard_matrix,
    odd_one_out,
    read_domains,
    read_ratings,
    read_triplets,
)
from neuronlab.analyze.find_experts import load_baselines
from neuronlab.data.corpora import label_pairs
from neuronlab.evaluate.concept_steering import concept_steering
from neuronlab.io import check_writable, read_json, write_bytes, write_json
from neuronlab.models.load import require_same_model
from neuronlab.select.experts import Expertise

MEASURES = ("spearman", "ap_cosine", "input_embedding", "sentence_embedding")


def align_experts(
    experts: str | Path,
    human: str | Path,
    out: str | Path,
    triplets: str | Path | None = None,
    report: bool = False,
    plot: str | Path | None = None,
) -> dict:
    """Spearman of expert-set Jaccard (tau 0.5 .. 0.9), AP cosine and the embedding baselines against the ratings
    in `human`, with bootstrap intervals; THINGS odd-one-out agreement with `triplets`. Writes out/alignment.json,
    out/alignment.html with `report`, the Spearman-against-tau figure at `plot`."""
    from neuronlab.report.plots import lines

    out = Path(out)
    check_writable(out, folder=True)
    check_writable(plot)
    ex = Expertise.load(Path(experts) / "expertise.safetensors")
    result = align(ex, read_ratings(human), baselines=load_baselines(experts))
    sim = jaccard_matrix(ex.experts(result["tau"]), ex.concepts)
    if triplets is not None:
        result["odd_one_out"] = odd_one_out(sim, ex.concepts, read_triplets(triplets))
    write_json(out / "alignment.json", result)
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
        from neuronlab.report.alignment import write_alignment_report

        tree = concept_tree(sim, ex.concepts)
        write_alignment_report(out / "alignment.html", ex, sim, tree, result, sweep, Path(human).name)
    return result


def expert_tree(
    experts: str | Path,
    out: str | Path,
    tau: float = 0.5,
    domains: str | Path | None = None,
    plot: str | Path | None = None,
) -> dict:
    """Average-linkage clustering of concepts by expert overlap at `tau` (and within- against between-domain
    Jaccard with `domains`: THINGS' words.csv or `word<TAB>domain` lines). Writes `out` (JSON) and the dendrogram
    at `plot`."""
    from neuronlab.report.plots import dendrogram

    check_writable(out, plot)
    ex = Expertise.load(Path(experts) / "expertise.safetensors")
    sim = jaccard_matrix(ex.experts(tau), ex.concepts)
    tree = concept_tree(sim, ex.concepts)
    if domains is not None:
        tree["domains"] = domain_overlap(sim, ex.concepts, read_domains(domains))
    write_json(out, tree)
    if plot is not None:
        write_bytes(plot, dendrogram(tree, ex.concepts, f"concepts by expert overlap (tau {tau})"))
    return tree


def alignment_trend(
    runs: Mapping[str, str | Path] | Sequence[str], out: str | Path, plot: str | Path | None = None
) -> dict:
    """The alignments of several checkpoints ({label: folder of align_experts}, in training order, or
    `LABEL=FOLDER` strings, the CLI's --run) side by side: {"checkpoints": [labels], measure: [value per
    checkpoint], "rows": {label: alignment}}. Writes `out` and the figure at `plot`."""
    from neuronlab.report.plots import lines

    if not isinstance(runs, Mapping):
        runs = label_pairs(list(runs), "--run", "FOLDER", "step1000=al-1000/", label="LABEL")
    check_writable(out, plot)
    rows = {label: read_json(Path(folder) / "alignment.json", "alignment") for label, folder in runs.items()}
    keys = [k for k in MEASURES if all(k in r for r in rows.values())]
    trend = {k: [rows[label][k] for label in rows] for k in keys}
    write_json(out, {"checkpoints": list(rows), **trend})
    if plot is not None:
        write_bytes(plot, lines(trend, list(rows), "checkpoint", "Spearman vs people", "alignment across training"))
    return {"checkpoints": list(rows), **trend, "rows": rows}


def steer_experts(
    model,
    tokenizer,
    experts: str | Path,
    out: str | Path,
    concepts: Sequence[str] | None = None,
    k: int = 50,
) -> dict:
    """result = steer_experts(model, tok, "ex/", "steering.json", ["dog", "car"], k=50)

    `concept_steering` with the expertise of `experts` (a folder of `find_experts`, made on this model): the
    probability of each concept's word plain and with its top-k experts forced, zeroed or dampened. Writes `out`
    (JSON) and returns the result."""
    ex = Expertise.load(Path(experts) / "expertise.safetensors")
    require_same_model(ex.meta.get("model"), model, "the expertise")
    result = concept_steering(model, tokenizer, ex, concepts, k)
    write_json(out, result)
    return result
