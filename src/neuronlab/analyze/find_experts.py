"""The whole expert-neuron run in one call (what `neuronlab experts find` does), and the embedding baselines the
alignment study compares experts with.

    ex = find_experts(model, tok, "ex/", words=["dog", "cat", "justice"], per_concept=20)
    ex = find_experts(model, tok, "ex/", words="words.txt", config=FindExpertsConfig(pool="mean", tau=0.7))
    ex = find_experts(model, tok, "ex/", concepts="concepts.jsonl")        # sentences from a file
    baselines = load_baselines("ex/")                                       # {name: [concepts, concepts]}

The folder gets concepts.jsonl (the sentences used), responses.safetensors (a checkpoint a rerun resumes from),
expertise.safetensors, baselines.safetensors and experts.json (experts at `tau`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from neuronlab.analyze.alignment import embedding_similarity, sentence_similarity
from neuronlab.artifacts import register_artifact
from neuronlab.config import Config, configured, option
from neuronlab.data.concepts import generate_concepts, read_concepts, read_words, sentence_list, write_concepts
from neuronlab.errors import NeuronlabError
from neuronlab.io import check_writable, read_safetensors, write_safetensors
from neuronlab.models.load import model_info
from neuronlab.models.sites import SiteKind
from neuronlab.select.experts import Expertise, expertise, responses

BASELINES_FORMAT = "neuronlab.similarity/1"  # baselines.safetensors: concept x concept similarity matrices


@dataclass(frozen=True)
class FindExpertsConfig(Config):
    """How expert neurons are found (the paper's defaults: max pooling over a sentence's tokens, tau 0.5)."""

    per_concept: int = option(20, "sentences the model writes per word (words=)")
    prompts: tuple[str, ...] | None = option(
        None, "prompt templates with {word} for a base model (default: few-shot word/sentence examples)", cli="--prompt"
    )
    chat: bool | None = option(None, "ask through the chat template (default: when the model is an instruct model)")
    site: SiteKind = option("act", "site kind: act, neuron, ffn_out, attn_out or resid")
    pool: Literal["max", "mean"] = option("max", "max or mean over each sentence's tokens")
    tau: float = option(0.5, "experts: AP at least tau of the way from chance to 1")
    float32: bool = option(False, "keep responses in float32 (default float16: half the memory)")
    batch_size: int = option(16, "sentences per forward pass")
    seed: int = option(0, "seed of the sampled negatives and of the generated sentences")
    negatives: float = option(
        1.0, "negatives per positive, sampled from the other concepts' sentences where a concept gives none"
    )
    drop_unwritten: bool = option(False, "leave out words the model writes no sentence for (instead of stopping)")

    def check(self) -> None:
        if self.site == "router":
            raise NeuronlabError("experts are found among neurons: use site act, neuron, ffn_out, attn_out or resid")
        if self.per_concept < 1 or self.batch_size < 1 or self.negatives <= 0 or not 0 <= self.tau <= 1:
            raise NeuronlabError("per_concept and batch_size must be at least 1, negatives > 0 and tau in [0, 1]")


def find_experts(
    model,
    tokenizer,
    out: str | Path,
    concepts: str | Path | dict | None = None,
    words: str | Path | Sequence[str] | None = None,
    config: FindExpertsConfig | None = None,
    progress: bool = True,
    **settings,
) -> Expertise:
    """Concepts (a concept file or dict, or `words` the model writes `per_concept` sentences for, see
    `generate_concepts`; `drop_unwritten` leaves out words it writes nothing for; `negatives` negatives per
    positive where the concepts give none), pooled responses of every neuron of `site`, AP/AUROC per concept, the
    embedding baselines and the experts at `tau`, all written to `out` (module doc). Settings: `config` or its
    fields as keywords (FindExpertsConfig). Returns the Expertise."""
    cfg = configured(FindExpertsConfig, config, settings, "find_experts")
    if (concepts is None) == (words is None):
        raise NeuronlabError("give either concepts (a concept file) or words (the model writes their sentences)")
    out = Path(out)
    check_writable(out / "experts.json")
    if concepts is not None:
        found = concepts if isinstance(concepts, dict) else read_concepts(concepts, cfg.seed, cfg.negatives)
    elif words is not None:
        listed = read_words(words) if isinstance(words, (str, Path)) else list(words)
        found = generate_concepts(
            model,
            tokenizer,
            listed,
            cfg.per_concept,
            list(cfg.prompts) if cfg.prompts else None,
            cfg.chat,
            seed=cfg.seed,
            ratio=cfg.negatives,
            drop_unwritten=cfg.drop_unwritten,
            progress=progress,
        )
    write_concepts(out / "concepts.jsonl", found)
    sentences, index = sentence_list(found)
    resp = responses(
        model,
        tokenizer,
        sentences,
        cfg.site,
        cfg.pool,
        cfg.batch_size,
        dtype=torch.float32 if cfg.float32 else torch.float16,
        checkpoint=out / "responses.safetensors",
        progress=progress,
    )
    meta = {"model": model_info(model), "site": cfg.site, "pool": cfg.pool, "sentences": len(sentences)}
    ex = expertise(resp, found, index, meta)
    ex.save(out / "expertise.safetensors")
    save_baselines(out / "baselines.safetensors", model, tokenizer, found, sentences, index, cfg.batch_size)
    ex.experts(cfg.tau).save(out / "experts.json")
    return ex


def save_baselines(
    path: str | Path, model, tokenizer, concepts: dict, sentences: list[str], index: dict, batch_size: int = 16
) -> None:
    """The paper's embedding baselines on the same concepts: cosine of the input embeddings of the words, and of
    the concepts' mean sentence representation (last layer, mean-pooled residual stream)."""
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
    return read_safetensors(path, BASELINES_FORMAT, "baselines")


def _baselines_summary(loaded: tuple[dict[str, Tensor], dict]) -> str:
    sims, header = loaded
    n = len(header.get("concepts", "").split(",")) if header.get("concepts") else "?"
    return f"embedding baselines for {n} concepts: {', '.join(sims)} (concept x concept similarity)"


register_artifact("embedding baselines", [BASELINES_FORMAT], _read_baselines, _baselines_summary)
