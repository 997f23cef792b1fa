"""Do concepts that share expert neurons match concepts people judge similar? (Fedzechkina et al. 2025)

    sim = jaccard_matrix(expertise.experts(0.5), expertise.concepts)   # [concepts, concepts]
    ratings = read_ratings("../shared/data/word_similarity/EN-SIMLEX-999.txt")
    spearman(sim, expertise.concepts, ratings)                         # {"spearman": 0.41, "pairs": 37, ...}
    align(expertise, ratings)                                           # Jaccard over tau, AP cosine

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


def jaccard(a: set, b: set) -> float:
    """|a & b| / |a | b| (0 for two empty sets)."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def jaccard_matrix(experts: NeuronSet, concepts: Sequence[str]) -> Tensor:
    """Jaccard index of every pair of concepts' expert sets, float64 [concepts, concepts]."""
    sets = [experts.pairs(c) if c in experts else set() for c in concepts]
    out = torch.zeros(len(concepts), len(concepts), dtype=torch.float64)
    for a in range(len(concepts)):
        for b in range(a, len(concepts)):
            out[a, b] = out[b, a] = jaccard(sets[a], sets[b])
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


def bootstrap_interval(
    model: Sequence[float], human: Sequence[float], resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> list[float]:
    """Percentile bootstrap interval of Spearman's rho over pairs resampled with replacement (SciPy's `bootstrap`,
    paired): [low, high]; NaN where rho is undefined."""
    import warnings

    import numpy as np
    from scipy.stats import bootstrap, spearmanr

    if len(set(model)) < 2:
        return [float("nan"), float("nan")]
    with warnings.catch_warnings():  # resamples whose model values are all equal give NaN, and say so each time
        warnings.simplefilter("ignore")
        res = bootstrap(
            (np.asarray(model), np.asarray(human)),
            lambda a, b: spearmanr(a, b).statistic,
            paired=True,
            vectorized=False,
            n_resamples=resamples,
            confidence_level=level,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]


def rated_words(ratings: Sequence[tuple[str, str, float]], n: int, keep=None) -> list[str]:
    """Up to `n` words that cover as many rated pairs as they can: greedily, the pair whose new words (one or
    two) add the most covered pairs per new word, ties broken by file order. `keep(word)` filters words (e.g.
    those the tokenizer has as one token). Rated pairs grow roughly linearly in n, so a study can fit its budget."""
    pairs = list(dict.fromkeys((a, b) for a, b, _ in ratings if a != b and (keep is None or (keep(a) and keep(b)))))
    partners: dict[str, set[str]] = {}
    for a, b in pairs:
        partners.setdefault(a, set()).add(b)
        partners.setdefault(b, set()).add(a)
    chosen: dict[str, None] = {}
    while len(chosen) < n:
        best, score = None, 0.0
        for a, b in pairs:
            new = [w for w in dict.fromkeys((a, b)) if w not in chosen]
            if not new or len(chosen) + len(new) > n:
                continue
            gain = sum(len(partners[w] & (chosen.keys() | set(new))) for w in new) - (len(new) == 2)
            if gain / len(new) > score:
                best, score = new, gain / len(new)
        if best is None:
            break
        chosen.update(dict.fromkeys(best))
    return list(chosen)


def spearman(
    sim: Tensor, concepts: Sequence[str], ratings: Sequence[tuple[str, str, float]], interval: bool = False
) -> dict:
    """Spearman's rho between `sim` and the human scores over the rated pairs both of whose words are concepts
    (pairs of a word with itself are left out): {"spearman", "pairs", "rated", "covered"}, and with `interval`
    "interval", its 95% bootstrap interval over pairs. rho is NaN where the model's similarities are all equal
    (e.g. no experts at a high tau)."""
    from scipy.stats import spearmanr

    index = {c.lower(): i for i, c in enumerate(concepts)}
    model, human, covered = [], [], []
    for a, b, score in ratings:
        if a in index and b in index and a != b:
            model.append(float(sim[index[a], index[b]]))
            human.append(score)
            covered.append([a, b, score])
    if len(covered) < 3:
        raise NeuronlabError(
            f"only {len(covered)} rated pairs have both words among the {len(concepts)} concepts: "
            "choose concepts from the ratings file"
        )
    rho = spearmanr(model, human).statistic if len(set(model)) > 1 else float("nan")
    out = {"spearman": float(rho), "pairs": len(covered), "rated": len(ratings), "covered": covered}
    if interval:
        out["interval"] = bootstrap_interval(model, human)
    return out


def align(
    expertise,
    ratings: Sequence[tuple[str, str, float]],
    taus: Sequence[float] = TAUS,
    baselines: dict[str, Tensor] | None = None,
) -> dict:
    """The alignment study on one Expertise: Spearman of Jaccard similarity at each tau (relative to chance, see
    `Expertise.experts`; the headline is tau = taus[0]), of AP cosine, and of any baseline similarity matrices
    ({name: [concepts, concepts]}); "intervals" holds the 95% bootstrap interval over pairs of the headline
    ("spearman"), of AP cosine and of each baseline."""
    concepts = expertise.concepts
    experts = {str(t): expertise.experts(t) for t in taus}
    sweep = {
        t: spearman(jaccard_matrix(ns, concepts), concepts, ratings, interval=t == str(taus[0]))
        for t, ns in experts.items()
    }
    head = sweep[str(taus[0])]
    cos = spearman(cosine_matrix(expertise["ap"]), concepts, ratings, interval=True)
    result = {
        "spearman": head["spearman"],
        "pairs": head["pairs"],
        "tau": taus[0],
        "jaccard": {t: r["spearman"] for t, r in sweep.items()},
        "experts": {t: ns.total() for t, ns in experts.items()},
        "ap_cosine": cos["spearman"],
        "intervals": {"spearman": head["interval"], "ap_cosine": cos["interval"]},
        "covered": head["covered"],
    }
    for name, sim in (baselines or {}).items():
        base = spearman(sim, concepts, ratings, interval=True)
        result[name], result["intervals"][name] = base["spearman"], base["interval"]
    return result


def embedding_similarity(model, tokenizer, words: Sequence[str]) -> Tensor:
    """Baseline: cosine of the model's input embeddings of each word (the mean over its tokens, tokenized as the
    word follows another in a sentence: `continuation_ids`, so no lone dummy-prefix token is shared by all)."""
    from neuronlab.data.scoring import continuation_ids

    table = model.get_input_embeddings().weight.detach()
    rows = [table[continuation_ids(tokenizer, "The", " " + w)[1]].float().mean(0).cpu() for w in words]
    return cosine_matrix(torch.stack(rows))


def sentence_similarity(hidden: Tensor, concepts: dict[str, dict], index: dict[str, int]) -> Tensor:
    """Baseline: cosine of each concept's mean sentence representation (`hidden` [sentences, d], e.g. the last
    layer's mean-pooled residual stream) over its positive sentences."""
    means = [hidden[torch.tensor([index[s] for s in sets["positive"]])].double().mean(0) for sets in concepts.values()]
    return cosine_matrix(torch.stack(means))


# ---------------------------------------------------------------- hierarchy and odd-one-out


def concept_tree(sim: Tensor, concepts: Sequence[str]) -> dict:
    """Average-linkage hierarchical clustering (SciPy) of concepts on the distance 1 - similarity:
    {"order": concepts left to right, "linkage": SciPy's [n - 1, 4] matrix as lists}."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    if len(concepts) < 2:
        raise NeuronlabError("a concept tree needs at least two concepts")
    dist = (1 - sim.double()).clamp(min=0).numpy().copy()
    dist[range(len(concepts)), range(len(concepts))] = 0
    z = linkage(squareform((dist + dist.T) / 2, checks=False), method="average")
    return {"order": [concepts[i] for i in leaves_list(z)], "linkage": z.tolist()}


def domain_overlap(sim: Tensor, concepts: Sequence[str], domains: dict[str, str]) -> dict:
    """Mean similarity of concept pairs within a domain and between domains (concepts without a domain skipped)."""
    within: list[float] = []
    between: list[float] = []
    labelled = [(i, domains[c]) for i, c in enumerate(concepts) if domains.get(c)]
    for a, (i, da) in enumerate(labelled):
        for j, db in labelled[a + 1 :]:
            (within if da == db else between).append(float(sim[i, j]))
    mean = lambda v: sum(v) / len(v) if v else float("nan")  # noqa: E731
    return {
        "within": mean(within),
        "between": mean(between),
        "pairs_within": len(within),
        "pairs_between": len(between),
    }


def read_domains(path: str | Path) -> dict[str, str]:
    """word -> domain from a CSV with a header naming `word` and a category column (THINGS' words.csv), or from
    `word<TAB>domain` lines."""
    import csv

    text = Path(path).read_text(encoding="utf-8").splitlines()
    header = next(csv.reader(text[:1]), [])
    if "word" in header and any("category" in h for h in header):
        w, c = header.index("word"), next(i for i, h in enumerate(header) if "category" in h)
        rows = [r for r in csv.reader(text[1:]) if len(r) > max(w, c)]
        return {r[w].lower(): r[c] for r in rows if r[c]}
    return {p[0].lower(): p[1] for p in (line.split("\t") for line in text) if len(p) >= 2 and p[1]}


def read_triplets(path: str | Path) -> list[tuple[str, str, str, int]]:
    """(word0, word1, word2, index of the people's majority odd-one-out) from THINGS' triplet CSV."""
    import csv

    with open(path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    need = {"word0", "word1", "word2", "majority_odd_one_out_index"}
    if not rows or not need <= set(rows[0]):
        raise NeuronlabError(f"{path} needs the columns {', '.join(sorted(need))}")
    return [
        (r["word0"].lower(), r["word1"].lower(), r["word2"].lower(), int(r["majority_odd_one_out_index"])) for r in rows
    ]


def odd_one_out(sim: Tensor, concepts: Sequence[str], triplets: Sequence[tuple[str, str, str, int]]) -> dict:
    """How often the model's odd one out (the item left when the most similar pair is kept) is the people's
    majority choice, over the triplets whose three words are concepts; chance is 1/3."""
    index = {c.lower(): i for i, c in enumerate(concepts)}
    hits, n = 0, 0
    for *words, majority in triplets:
        if not all(w in index for w in words):
            continue
        a, b, c = (index[w] for w in words)
        pairs = [float(sim[b, c]), float(sim[a, c]), float(sim[a, b])]  # pair kept when item 0, 1, 2 is the odd one
        hits += int(max(range(3), key=lambda i: pairs[i]) == majority)
        n += 1
    return {"agreement": hits / n if n else float("nan"), "triplets": n, "chance": 1 / 3}
