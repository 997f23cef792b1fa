"""Do concepts that share expert neurons match concepts people judge similar? (Fedzechkina et al. 2025)

    >>> sim = jaccard_matrix(expertise.experts(0.5), expertise.concepts)   # [concepts, concepts]
    >>> ratings = read_ratings("../shared/data/word_similarity/EN-SIMLEX-999.txt")
    >>> spearman(sim, expertise.concepts, ratings)                         # {"spearman": 0.41, "pairs": 37, ...}
    >>> align(expertise, ratings)                                           # Jaccard over tau, AP cosine

Similarities: Jaccard of two concepts' expert sets (|A & B| / |A | B|, 0 where both are empty), and a
threshold-free cosine of their AP vectors over all neurons. Spearman's rho (SciPy) is taken over the rated pairs
whose two words are both concepts; how many that covers is reported with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from neuronlab.errors import NeuronlabError
from neuronlab.select.neuron_set import NeuronSet

TAUS = (0.5, 0.6, 0.7, 0.8, 0.9)


def jaccard_matrix(experts: NeuronSet, concepts: Sequence[str]) -> Tensor:
    """Jaccard index of every pair of concepts' expert sets, float64 [concepts, concepts]."""
    sets = [{(layer, i) for layer, idx in experts[c].items() for i in idx} if c in experts else set() for c in concepts]
    out = torch.zeros(len(concepts), len(concepts), dtype=torch.float64)
    for a in range(len(concepts)):
        for b in range(a, len(concepts)):
            union = len(sets[a] | sets[b])
            out[a, b] = out[b, a] = len(sets[a] & sets[b]) / union if union else 0.0
    return out


def cosine_matrix(vectors: Tensor) -> Tensor:
    """Cosine similarity of every pair of rows (flattened), float64 [rows, rows]."""
    v = vectors.reshape(vectors.shape[0], -1).double()
    v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return v @ v.T


def read_ratings(path: str | Path) -> list[tuple[str, str, float]]:
    """Human similarity ratings: lines `word1 word2 score` split by tabs or spaces (WordSim-353, SimLex-999, RG-65,
    MEN's natural-form file); a header line without a number is skipped."""
    path = Path(path)
    if not path.is_file():
        raise NeuronlabError(f"no ratings file at {path}")
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        try:
            out.append((parts[0].lower(), parts[1].lower(), float(parts[2])))
        except ValueError:
            continue
    if not out:
        raise NeuronlabError(f"{path} has no `word1 word2 score` lines")
    return out


def spearman(sim: Tensor, concepts: Sequence[str], ratings: Sequence[tuple[str, str, float]]) -> dict:
    """Spearman's rho between `sim` and the human scores over the rated pairs both of whose words are concepts
    (pairs of a word with itself are left out): {"spearman", "pairs", "rated", "covered"}."""
    from scipy.stats import spearmanr

    index = {c.lower(): i for i, c in enumerate(concepts)}
    model, human, covered = [], [], []
    for a, b, score in ratings:
        if a in index and b in index and a != b:
            model.append(float(sim[index[a], index[b]]))
            human.append(score)
            covered.append([a, b, score])
    if len(covered) < 3:
        raise NeuronlabError(f"only {len(covered)} rated pairs have both words among the {len(concepts)} concepts: "
                             "choose concepts from the ratings file")  # fmt: skip
    rho = spearmanr(model, human).statistic
    return {"spearman": float(rho), "pairs": len(covered), "rated": len(ratings), "covered": covered}


def align(expertise, ratings: Sequence[tuple[str, str, float]], taus: Sequence[float] = TAUS,
          baselines: dict[str, Tensor] | None = None) -> dict:  # fmt: skip
    """The alignment study on one Expertise: Spearman of Jaccard similarity at each tau (the headline is tau =
    taus[0]), of AP cosine, and of any baseline similarity matrices ({name: [concepts, concepts]})."""
    concepts = expertise.concepts
    sweep = {str(t): spearman(jaccard_matrix(expertise.experts(t), concepts), concepts, ratings) for t in taus}
    head = sweep[str(taus[0])]
    result = {"spearman": head["spearman"], "pairs": head["pairs"], "tau": taus[0],
              "jaccard": {t: r["spearman"] for t, r in sweep.items()},
              "experts": {str(t): expertise.experts(t).total() for t in taus},
              "ap_cosine": spearman(cosine_matrix(expertise["ap"]), concepts, ratings)["spearman"],
              "covered": head["covered"]}  # fmt: skip
    for name, sim in (baselines or {}).items():
        result[name] = spearman(sim, concepts, ratings)["spearman"]
    return result


def embedding_similarity(model, tokenizer, words: Sequence[str]) -> Tensor:
    """Baseline: cosine of the model's input embeddings of each word (the mean over its tokens)."""
    table = model.get_input_embeddings().weight.detach()
    rows = []
    for w in words:
        ids = tokenizer(" " + w, add_special_tokens=False)["input_ids"] or tokenizer(w, add_special_tokens=False)["input_ids"]
        rows.append(table[ids].float().mean(0).cpu())
    return cosine_matrix(torch.stack(rows))


def sentence_similarity(hidden: Tensor, concepts: dict[str, dict], index: dict[str, int]) -> Tensor:
    """Baseline: cosine of each concept's mean sentence representation (`hidden` [sentences, d], e.g. the last
    layer's mean-pooled residual stream) over its positive sentences."""
    means = [hidden[torch.tensor([index[s] for s in sets["positive"]])].double().mean(0) for sets in concepts.values()]
    return cosine_matrix(torch.stack(means))
