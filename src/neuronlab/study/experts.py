"""Fedzechkina et al. 2025 (arXiv 2502.15090): expert neurons and human concept similarity.

    nl.study("experts", ["gemma-3-270m", "smollm2-135m-instruct"], "runs/experts", size="docs")
    nl.study("experts", ["stories260K/"], "runs/ex", size="smoke", word_list=("dog", "cat", "sun"), prompts=(...))

Words: `rated_words` picks `words` words of SimLex-999, WordSim-353 and RG-65 (the data folder's word_similarity/)
that cover as many rated pairs as it can, among the words the tokenizer has as one token (" word"), plus the words
of the first `triplets` THINGS odd-one-out triplets whose three words are such tokens (or `word_list` as given). The
model writes `per_concept` sentences for each (its chat template if it is an instruct model, else few-shot examples
or `prompts`); negatives are `negatives` times as many of the other words' sentences. Then `find_experts` (each
model's folder keeps its files), Spearman of expert Jaccard similarity (AP relative to chance at least `tau`),
of AP cosine and of the two embedding baselines (input embeddings, mean last-layer sentence representation)
against each rating set with 95% bootstrap intervals over pairs, the THINGS odd one out, and `concept_steering`
(force the top-`k` experts at every position or the last one, zero them, dampen them; the word's probability).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from neuronlab.analyze.alignment import (
    TAUS,
    align,
    jaccard_matrix,
    odd_one_out,
    rated_words,
    read_ratings,
    read_triplets,
)
from neuronlab.analyze.find_experts import find_experts, load_baselines
from neuronlab.config import Config, option
from neuronlab.data.concepts import generate_concepts
from neuronlab.errors import NeuronlabError
from neuronlab.evaluate.concept_steering import MODES, concept_steering
from neuronlab.io import write_json
from neuronlab.report.plots import bars, intervals, scatter_panels
from neuronlab.study.base import Claim, Phases, Study, above, register_study

SETS = {"SimLex-999": "EN-SIMLEX-999.txt", "WordSim-353": "EN-WS-353-ALL.txt", "RG-65": "EN-RG-65.txt"}
HEADLINE = "SimLex-999"  # the rating set the claims read (the most pairs covered in the docs' runs)
THINGS = "things/things_testset2_human_ooo_counts.csv"
MEASURES = {  # the keys of `align`'s result -> their names on the page
    "spearman": "expert Jaccard",
    "ap_cosine": "AP cosine",
    "input_embedding": "input embedding",
    "sentence_embedding": "sentence embedding",
}


@dataclass(frozen=True)
class ExpertsStudyConfig(Config):
    data: str = option("../shared/data", "folder of word_similarity/ (SimLex-999, WordSim-353, RG-65) and things/")
    words: int = option(150, "rated words to take: those covering the most rated pairs, one token each")
    word_list: tuple[str, ...] = option((), "these words instead of the rated words chosen (no THINGS words added)")
    triplets: int = option(10, "THINGS odd-one-out triplets whose words to add")
    per_concept: int = option(6, "sentences the model writes a word")
    negatives: float = option(4.0, "negatives a positive, from the other words' sentences")
    prompts: tuple[str, ...] = option((), "prompt templates with {word} for a base model (default: few-shot examples)")
    tau: float = option(0.5, "experts: AP at least tau of the way from chance to 1")
    k: int = option(50, "experts a concept forced, zeroed or dampened when steering")
    resamples: int = option(1000, "bootstrap resamples of the interval of experts minus the best baseline")
    batch_size: int = option(16, "sentences a forward pass")
    seed: int = option(0, "seed of the sentences the model writes, the negatives and the bootstrap")

    def check(self) -> None:
        if self.words < 2 or self.per_concept < 1 or self.negatives <= 0 or self.k < 1 or self.resamples < 10:
            raise NeuronlabError(
                "words must be at least 2, per_concept and k at least 1, negatives > 0, resamples >= 10"
            )
        if not 0 <= self.tau <= 1:
            raise NeuronlabError(f"tau must lie in [0, 1], not {self.tau}")


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row of `a` with the same row of `b` ([resamples, pairs]); NaN for a constant row."""
    from scipy.stats import rankdata

    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (ra * rb).sum(1) / np.sqrt((ra**2).sum(1) * (rb**2).sum(1))


def gap_interval(table: dict[str, list], resamples: int, seed: int) -> list[float]:
    """95% percentile bootstrap interval over pairs (paired) of rho(expert Jaccard) minus the larger rho of the two
    embedding baselines, from a rating set's pair table."""
    human = np.asarray(table["human"])
    idx = np.random.default_rng(seed).integers(0, len(human), (resamples, len(human)))
    rho = {
        k: _spearman_rows(np.asarray(table[k])[idx], human[idx])
        for k in ("jaccard", "input_embedding", "sentence_embedding")
    }
    gaps = rho["jaccard"] - np.maximum(rho["input_embedding"], rho["sentence_embedding"])
    gaps = gaps[~np.isnan(gaps)]
    return [float(np.percentile(gaps, 2.5)), float(np.percentile(gaps, 97.5))] if len(gaps) else [math.nan] * 2


def pair_table(ex, ratings, tau: float, baselines: dict) -> dict[str, list]:
    """Every rated pair both of whose words are concepts: the words, the human score and each similarity."""
    index = {c.lower(): i for i, c in enumerate(ex.concepts)}
    sims = {"jaccard": jaccard_matrix(ex.experts(tau), ex.concepts), **baselines}
    rows = [(a, b, s) for a, b, s in ratings if a in index and b in index and a != b]
    table: dict[str, list] = {"pairs": [[a, b] for a, b, _ in rows], "human": [s for _, _, s in rows]}
    for name, sim in sims.items():
        table[name] = [float(sim[index[a], index[b]]) for a, b, _ in rows]
    return table


def wilson(share: float, n: int) -> list[float]:
    """95% Wilson interval of a share of n."""
    z = 1.959964
    centre, half = share + z * z / (2 * n), z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    return [(centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)]


def _words(tokenizer, cfg: ExpertsStudyConfig, ratings: dict) -> tuple[list[str], list]:
    data = Path(cfg.data)
    triplets = read_triplets(data / THINGS)
    if cfg.word_list:
        return list(dict.fromkeys(cfg.word_list)), triplets
    one_token = lambda w: len(tokenizer(" " + w, add_special_tokens=False)["input_ids"]) == 1  # noqa: E731
    words = rated_words([r for rs in ratings.values() for r in rs], cfg.words, one_token)
    usable = [t for t in triplets if all(one_token(w) for w in t[:3])][: cfg.triplets]
    return list(dict.fromkeys(words + [w for t in usable for w in t[:3]])), triplets


def _alignment(ex, ratings: dict, baselines: dict, cfg: ExpertsStudyConfig) -> tuple[dict, dict]:
    """({rating set: Spearman of each measure with its interval, the pair table}, {set skipped: pairs covered})."""
    taus = (cfg.tau, *[t for t in TAUS if t != cfg.tau])
    found, skipped = {}, {}
    for name, rs in ratings.items():
        table = pair_table(ex, rs, cfg.tau, baselines)
        if len(table["human"]) < 3:
            skipped[name] = len(table["human"])
            continue
        al = align(ex, rs, taus, baselines)
        found[name] = {
            "pairs": al["pairs"],
            "jaccard_by_tau": al["jaccard"],
            **{k: {"rho": al[k], "interval": al["intervals"][k]} for k in MEASURES if k in al},
            "gap_interval": gap_interval(table, cfg.resamples, cfg.seed) if baselines else None,
            "table": table,
        }
    return found, skipped


def gap(al: dict) -> float | None:
    """rho(expert Jaccard) minus the larger rho of the two embedding baselines (None without them)."""
    if "input_embedding" not in al:
        return None
    return al["spearman"]["rho"] - max(al["input_embedding"]["rho"], al["sentence_embedding"]["rho"])


def raised(steering: dict, mode: str = "force_all") -> tuple[float, int]:
    """(share of concepts whose word became likelier under `mode`, concepts)."""
    rows = steering["concepts"].values()
    return sum(r[mode] > r["plain"] for r in rows) / len(rows), len(rows)


def _number(value) -> str:
    """0.46 or [0.34, 0.57] for a figure's title."""
    return f"[{value[0]:.2f}, {value[1]:.2f}]" if isinstance(value, list) else f"{value:.2f}"


INTERVAL_RULE = (
    "holds when the 95% interval lies above {bar}, does not hold when it lies at or below, else inconclusive"
)


@register_study
class Experts(Study):
    name = "experts"
    paper = "Fedzechkina et al. 2025, arXiv 2502.15090"
    title = "Expert neurons and human concept similarity"
    config = ExpertsStudyConfig
    sizes: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"words": 6, "per_concept": 2, "triplets": 1, "k": 20, "resamples": 200},
        "docs": {},  # the docs' Gemma run: 150 words (and 10 THINGS triplets' words), 6 sentences a word
        "paper": {"words": 500, "per_concept": 20, "triplets": 100},
    }

    def measure(self, model, tokenizer, cfg: ExpertsStudyConfig, out: Path, phases: Phases) -> dict[str, Any]:
        ratings = {name: read_ratings(Path(cfg.data) / "word_similarity" / file) for name, file in SETS.items()}
        words, triplets = _words(tokenizer, cfg, ratings)
        with phases("write sentences"):
            prompts = list(cfg.prompts) or None
            concepts = generate_concepts(
                model,
                tokenizer,
                words,
                cfg.per_concept,
                prompts,
                seed=cfg.seed,
                ratio=cfg.negatives,
                drop_unwritten=True,
            )
        with phases("find experts"):
            ex = find_experts(model, tokenizer, out, concepts, tau=cfg.tau, batch_size=cfg.batch_size, seed=cfg.seed)
        with phases("alignment"):
            alignment, skipped = _alignment(ex, ratings, load_baselines(out), cfg)
            things = odd_one_out(jaccard_matrix(ex.experts(cfg.tau), ex.concepts), ex.concepts, triplets)
        with phases("concept steering"):
            steering = concept_steering(model, tokenizer, ex, k=cfg.k)
            write_json(out / "steering.json", steering)
        return {
            "words_asked": len(words),
            "concepts": len(ex.concepts),
            "chance_ap": sum(ex.chance) / len(ex.chance),
            "experts": {str(t): ex.experts(t).total() for t in TAUS},
            "alignment": alignment,
            "skipped": skipped,
            "odd_one_out": things,
            "steering": {k: steering[k] for k in ("k", "prompts", "modes", "concepts")},
        }

    def summary(self, figures: dict[str, dict[str, Any]], cfg: ExpertsStudyConfig) -> dict[str, dict[str, str]]:
        rows: dict[str, dict[str, str]] = {"concepts (words with sentences written)": {}}
        for m, f in figures.items():
            rows["concepts (words with sentences written)"][m] = f"{f['concepts']} of {f['words_asked']}"
            for s, a in f["alignment"].items():
                rows.setdefault(f"{s}: rated pairs covered", {})[m] = str(a["pairs"])
                for k, name in MEASURES.items():
                    if k in a:
                        rows.setdefault(f"{s}: {name}", {})[m] = f"{a[k]['rho']:.2f} {_number(a[k]['interval'])}"
            things = f["odd_one_out"]
            if things.get("triplets"):
                rows.setdefault("THINGS odd one out (chance 0.33)", {})[m] = (
                    f"{things['agreement']:.2f} of {things['triplets']}"
                )
            for mode in MODES:
                share, n = raised(f["steering"], mode)
                rows.setdefault(f"steering {mode}: words made likelier", {})[m] = f"{share:.2f} of {n}"
        return rows

    def claims(self, figures: dict[str, dict[str, Any]], cfg: ExpertsStudyConfig) -> list[Claim]:
        head = {m: f["alignment"].get(HEADLINE) for m, f in figures.items()}
        rho = {m: a and a["spearman"]["rho"] for m, a in head.items()}
        rho_interval = {m: a and a["spearman"]["interval"] for m, a in head.items()}
        over = {m: a and gap(a) for m, a in head.items()}
        over_interval = {m: a and a["gap_interval"] for m, a in head.items()}
        force = {m: raised(f["steering"]) for m, f in figures.items()}
        force_interval: dict[str, list[float] | None] = {m: wilson(*v) for m, v in force.items()}
        return [
            Claim(
                "The more two concepts share expert neurons, the more similar people rate them",
                f"Spearman's rho of the Jaccard similarity of two concepts' experts (tau {cfg.tau}) with the "
                f"{HEADLINE} ratings, 95% bootstrap interval over the rated pairs (the figure: each rated pair)",
                INTERVAL_RULE.format(bar=0),
                rho,
                {m: above(rho[m], 0, rho_interval[m]) for m in figures},
                rho_interval,
                figure=scatter_panels(
                    {
                        f"{m}: rho {_number(rho[m])} {_number(rho_interval[m])}": (
                            a["table"]["human"],
                            a["table"]["jaccard"],
                        )
                        for m, a in head.items()
                        if a
                    },
                    f"{HEADLINE} rating (people)",
                    f"expert Jaccard (tau {cfg.tau})",
                ),
            ),
            Claim(
                "Experts align with human similarity better than the model's embeddings do",
                f"rho of expert Jaccard minus the larger rho of the two baselines (cosine of the input embeddings, "
                f"of the mean last-layer sentence representations) on {HEADLINE}; paired 95% bootstrap interval",
                INTERVAL_RULE.format(bar=0),
                over,
                {m: above(over[m], 0, over_interval[m]) for m in figures},
                over_interval,
                figure=intervals(
                    {
                        f"{m}\n{s} ({a['pairs']})": {
                            name: (a[k]["rho"], a[k]["interval"]) for k, name in MEASURES.items() if k in a
                        }
                        for m, f in figures.items()
                        for s, a in f["alignment"].items()
                    },
                    "Spearman with people",
                    "experts against the embedding baselines",
                ),
            ),
            Claim(
                "Forcing a concept's expert neurons raises the probability of its word",
                f"share of concepts whose word is likelier after neutral prompts when their top {cfg.k} experts are "
                "set to their median response (on_p50) at every position; 95% Wilson interval",
                INTERVAL_RULE.format(bar=0.5),
                {m: v[0] for m, v in force.items()},
                {m: above(force[m][0], 0.5, force_interval[m]) for m in figures},
                force_interval,
                figure=bars(
                    {mode: {m: raised(f["steering"], mode)[0] for m, f in figures.items()} for mode in MODES},
                    "share of words made likelier",
                    f"top-{cfg.k} experts steered (0.5: as many down as up)",
                ),
            ),
        ]
