"""neuronlab experts find | align: expert neurons per concept and their alignment with human similarity."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neuronlab.cli.common import BatchOpt, ModelRef, PlotOpt, friendly, group, model_options, writable
from neuronlab.errors import NeuronlabError

app = group("Expert neurons: concepts, AP per neuron, alignment with human similarity (Fedzechkina et al. 2025).")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="experts")


@app.command("find")
@friendly
@model_options()
def experts_find(
    model: ModelRef,
    out: Annotated[Path, typer.Option(help="Folder for responses, expertise, experts.json and the concepts used.")],
    concepts: Annotated[Path | None, typer.Option(help="Concept file or folder: JSON/JSONL {concept, positive, "
                                                        "negative?}.")] = None,  # fmt: skip
    words: Annotated[Path | None, typer.Option(help="Or a file of concept words (one a line, or a ratings file): "
                                                     "the model writes their sentences.")] = None,  # fmt: skip
    per_concept: Annotated[int, typer.Option(help="Sentences the model writes per word (--words).")] = 20,
    site: Annotated[str, typer.Option(help="Site kind: act, neuron, ffn_out, attn_out or resid.")] = "act",
    pool: Annotated[str, typer.Option(help="max or mean over each sentence's tokens.")] = "max",
    tau: Annotated[float, typer.Option(help="Experts: neurons with AP >= tau.")] = 0.5,
    float32: Annotated[bool, typer.Option(help="Keep responses in float32 (default float16: half the memory).")] = False,
    batch_size: BatchOpt = 16,
    seed: Annotated[int, typer.Option(help="Seed of the sampled negatives and of the generated sentences.")] = 0,
) -> None:
    """Pooled responses of every neuron to each concept's sentences, AP/AUROC per concept, experts (AP >= tau)."""
    import torch

    from neuronlab.data.concepts import generate_concepts, read_concepts, sentence_list, write_concepts
    from neuronlab.models.load import model_info
    from neuronlab.select.experts import expertise, responses

    if (concepts is None) == (words is None):
        raise NeuronlabError("pass either --concepts FILE or --words FILE")
    writable(out, folder=True)
    found = read_concepts(concepts, seed) if concepts is not None else None
    loaded, tok = model.load()
    if found is None:
        found = generate_concepts(loaded, tok, read_words(words), per_concept, seed=seed)
    write_concepts(out / "concepts.jsonl", found)
    sentences, index = sentence_list(found)
    dtype = torch.float32 if float32 else torch.float16
    resp = responses(loaded, tok, sentences, site, pool, batch_size, dtype=dtype, checkpoint=out / "responses.safetensors")
    meta = {"model": model_info(loaded), "site": site, "pool": pool, "sentences": len(sentences)}
    ex = expertise(resp, found, index, meta)
    ex.save(out / "expertise.safetensors")
    save_baselines(out / "baselines.safetensors", loaded, tok, found, sentences, index, batch_size)
    ex.experts(tau).save(out / "experts.json")
    typer.echo(ex.summary())
    typer.echo(f"wrote {out}/concepts.jsonl, responses.safetensors, expertise.safetensors, experts.json")


def save_baselines(path: Path, model, tok, concepts: dict, sentences: list[str], index: dict, batch_size: int) -> None:
    """The paper's embedding baselines on the same concepts, for `experts align`: cosine of the input embeddings
    of the words, and of the concepts' mean sentence representation (last layer, mean-pooled residual stream)."""
    from neuronlab.analyze.alignment import embedding_similarity, sentence_similarity
    from neuronlab.io import write_safetensors
    from neuronlab.select.experts import responses

    hidden = responses(model, tok, sentences, "resid", "mean", batch_size, progress=False)[:, -1]
    sims = {"input_embedding": embedding_similarity(model, tok, list(concepts)),
            "sentence_embedding": sentence_similarity(hidden, concepts, index)}  # fmt: skip
    write_safetensors(path, sims, "neuronlab.similarity/1", concepts=",".join(concepts))


def read_words(path: Path) -> list[str]:
    """Concept words: the first column of each line (a plain list, or a ratings file's both words), in order."""
    from neuronlab.data.corpora import read_lines

    words = []
    for line in read_lines(path):
        parts = line.split()
        words += parts[:2] if len(parts) >= 3 else parts[:1]
    return list(dict.fromkeys(w.lower() for w in words))


@app.command("align")
@friendly
def experts_align(
    experts: Annotated[Path, typer.Option(help="Folder from `neuronlab experts find`.")],
    human: Annotated[Path, typer.Option(help="Ratings: `word1 word2 score` lines (WordSim-353, SimLex-999, MEN).")],
    out: Annotated[Path, typer.Option(help="Folder for alignment.json.")],
    plot: PlotOpt = None,
) -> None:
    """Spearman between expert-overlap (Jaccard) similarity of concepts and human similarity ratings."""
    from neuronlab.analyze.alignment import align, read_ratings
    from neuronlab.io import write_bytes, write_json
    from neuronlab.select.experts import Expertise

    writable(out, folder=True)
    writable(plot)
    ex = Expertise.load(experts / "expertise.safetensors")
    baselines = {}
    if (experts / "baselines.safetensors").is_file():
        from neuronlab.io import read_safetensors

        baselines, _ = read_safetensors(experts / "baselines.safetensors", "neuronlab.similarity/1", "baselines")
    result = align(ex, read_ratings(human), baselines=baselines)
    write_json(out / "alignment.json", result)
    typer.echo(f"Spearman (Jaccard of experts, tau {result['tau']}): {result['spearman']:.3f} over {result['pairs']} "
               f"rated pairs; AP cosine {result['ap_cosine']:.3f}" + "".join(
                   f"; {k.replace('_', ' ')} {result[k]:.3f}" for k in baselines))  # fmt: skip
    for t, rho in result["jaccard"].items():
        typer.echo(f"  tau {t}: {rho:.3f} ({result['experts'][t]} experts)")
    if plot is not None:
        from neuronlab.report.plots import lines

        taus = list(result["jaccard"])
        write_bytes(plot, lines({"Jaccard of experts": list(result["jaccard"].values())}, taus, "tau",
                                "Spearman vs people", "alignment with human similarity"))  # fmt: skip
    typer.echo(f"wrote {out}/alignment.json")
