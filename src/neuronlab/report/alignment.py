"""The expert-alignment page (alignment.html): the setup, Spearman of every similarity against people, Spearman
against the expert threshold, the Jaccard matrix and the concept tree."""

from __future__ import annotations

from html import escape
from pathlib import Path

from torch import Tensor

from neuronlab.models.naming import model_name
from neuronlab.report.html import Report
from neuronlab.report.plots import dendrogram, similarity


def write_alignment_report(path: Path, ex, sim: Tensor, tree: dict, result: dict, sweep: bytes, human: str) -> None:
    """write_alignment_report(out / "alignment.html", ex, sim, tree, result, sweep_png, "EN-SIMLEX-999.txt")

    `ex`: the Expertise; `sim`: its Jaccard matrix at result["tau"]; `tree`: `concept_tree(sim, ex.concepts)`;
    `sweep`: the Spearman-against-tau figure;
    `human`: the ratings file's name. The title names the model (`model_name`); concept names and every other
    text are escaped."""
    name = model_name(ex.meta, "an unnamed model")  # its name or hub id, never a local path
    rep = Report(f"neuronlab: expert neurons of {name} and human similarity")
    meta = {k: escape(str(ex.meta.get(k))) for k in ("site", "pool", "sentences")}
    rep.text(
        "Setup",
        f"<p>Model <code>{escape(name)}</code>, site {meta['site']}, {meta['pool']} pooling, {len(ex.concepts)} "
        f"concepts, {meta['sentences']} sentences; ratings <code>{escape(human)}</code>, {result['pairs']} rated "
        "pairs covered.</p>",
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
    rep.figure("Concepts clustered by expert overlap", dendrogram(tree, ex.concepts, "average linkage on 1 - Jaccard"))
    rep.save(path)
