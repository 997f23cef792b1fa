"""The whole expert-neuron run in one call (what `neuronlab experts find` does), and the embedding baselines the
alignment study compares experts with.

    ex = find_experts(model, tok, "ex/", words=["dog", "cat", "justice"], per_concept=20)
    ex = find_experts(model, tok, "ex/", concepts="concepts.jsonl")        # sentences from a file
    baselines = load_baselines("ex/")                                       # {name: [concepts, concepts]}

The folder gets concepts.jsonl (the sentences used), responses.safetensors (a checkpoint a rerun resumes from),
expertise.safetensors, baselines.safetensors and experts.json (experts at `tau`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from neuronlab.artifacts import register_artifact
from neuronlab.errors import NeuronlabError
from neuronlab.select.experts import Expertise

BASELINES_FORMAT = "neuronlab.similarity/1"  # baselines.safetensors: concept x concept similarity matrices


def find_experts(
    model,
    tokenizer,
    out: str | Path,
    concepts: str | Path | dict | None = None,
    words: str | Path | Sequence[str] | None = None,
    per_concept: int = 20,
    prompts: Sequence[str] | None = None,
    chat: bool | None = None,
    site: str = "act",
    pool: str = "max",
    tau: float = 0.5,
    dtype: torch.dtype = torch.float16,
    batch_size: int = 16,
    seed: int = 0,
    negatives: float = 1.0,
    drop_unwritten: bool = False,
    progress: bool = True,
) -> Expertise:
    """Concepts (a concept file or dict, or `words` the model writes `per_concept` sentences for, see
    `generate_concepts`; `drop_unwritten` leaves out words it writes nothing for; `negatives` negatives per
    positive where the concepts give none), pooled responses of every neuron of `site`, AP/AUROC per concept, the
    embedding baselines and the experts at `tau`, all written to `out` (module doc). Returns the Expertise."""
    from neuronlab.data.concepts import generate_concepts, read_concepts, read_words, sentence_list, write_concepts
    from neuronlab.io import check_writable
    from neuronlab.models.load import model_info
    from neuronlab.select.experts import expertise, responses

    if (concepts is None) == (words is None):
        raise NeuronlabError("give either concepts (a concept file) or words (the model writes their sentences)")
    out = Path(out)
    check_writable(out / "experts.json")
    if concepts is not None:
        found = concepts if isinstance(concepts, dict) else read_concepts(concepts, seed, negatives)
    elif words is not None:
        listed = read_words(words) if isinstance(words, (str, Path)) else list(words)
        found = generate_concepts(
            model,
            tokenizer,
            listed,
            per_concept,
            prompts,
            chat,
            seed=seed,
            ratio=negatives,
            drop_unwritten=drop_unwritten,
            progress=progress,
        )
    write_concepts(out / "concepts.jsonl", found)
    sentences, index = sentence_list(found)
    resp = responses(
        model,
        tokenizer,
        sentences,
        site,
        pool,
        batch_size,
        dtype=dtype,
        checkpoint=out / "responses.safetensors",
        progress=progress,
    )
    meta = {"model": model_info(model), "site": site, "pool": pool, "sentences": len(sentences)}
    ex = expertise(resp, found, index, meta)
    ex.save(out / "expertise.safetensors")
    save_baselines(out / "baselines.safetensors", model, tokenizer, found, sentences, index, batch_size)
    ex.experts(tau).save(out / "experts.json")
    return ex


def save_baselines(
    path: str | Path, model, tokenizer, concepts: dict, sentences: list[str], index: dict, batch_size: int = 16
) -> None:
    """The paper's embedding baselines on the same concepts: cosine of the input embeddings of the words, and of
    the concepts' mean sentence representation (last layer, mean-pooled residual stream)."""
    from neuronlab.analyze.alignment import embedding_similarity, sentence_similarity
    from neuronlab.io import write_safetensors
    from neuronlab.select.experts import responses

    hidden = responses(model, tokenizer, sentences, "resid", "mean", batch_size, progress=False)[:, -1]
    sims = {
        "input_embedding": embedding_similarity(model, tokenizer, list(concepts)),
        "sentence_embedding": sentence_similarity(hidden, concepts, index),
    }
    write_safetensors(path, sims, BASELINES_FORMAT, concepts=",".join(concepts))


def load_baselines(folder: str | Path) -> dict[str, Tensor]:
    """The baselines `find_experts` wrote into `folder` ({} where there are none)."""
    path = Path(folder) / "baselines.safetensors"
    return _read_baselines(path)[0] if path.is_file() else {}


def _read_baselines(path: Path) -> tuple[dict[str, Tensor], dict]:
    from neuronlab.io import read_safetensors

    return read_safetensors(path, BASELINES_FORMAT, "baselines")


def _baselines_summary(loaded: tuple[dict[str, Tensor], dict]) -> str:
    sims, header = loaded
    n = len(header.get("concepts", "").split(",")) if header.get("concepts") else "?"
    return f"embedding baselines for {n} concepts: {', '.join(sims)} (concept x concept similarity)"


register_artifact("embedding baselines", [BASELINES_FORMAT], _read_baselines, _baselines_summary)
