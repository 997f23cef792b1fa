"""The expert-alignment page (alignment.html): the setup, Spearman of every similarity against people, Spearman
against the expert threshold, the Jaccard matrix and the concept tree."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from neuronlab.analyze.alignment import concept_tree
from neuronlab.report.html import Report
from neuronlab.report.plots import dendrogram, similarity


def write_alignment_report(path: Path, ex, sim: Tensor, result: dict, sweep: bytes, human: str) -> None:
    """`ex`: the Expertise; `sim`: its Jaccard matrix at result["tau"]; `sweep`: the Spearman-against-tau figure;
    `human`: the ratings file's name."""
    rep = Report("neuronlab: expert neurons and human similarity")
    model = ex.meta.get("model", {})
    rep.text(
        "Setup",
        f"<p>Model <code>{model.get('name_or_path') or '?'}</code>, site {ex.meta.get('site')}, "
        f"{ex.meta.get('pool')} pooling, {len(ex.concepts)} concepts, {ex.meta.get('sentences')} "
        f"sentences; ratings <code>{human}</code>, {result['pairs']} rated pairs covered.</p>",
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
