"""What forcing or silencing a concept's expert neurons does to the probability of the concept's word.

    result = concept_steering(model, tok, ex, k=50)            # every concept of the Expertise
    result["modes"]["force_last"]["raised"]                    # share of concepts whose word became likelier

For each concept and neutral prompt the probability of the word's first token (in context, `continuation_ids`)
as the next token is read plainly and under each mode of `expert_plan` with the concept's top-k experts:
"force_all" / "force_last" set them to on_p50 at every position / at the last one (Suau et al.), "zero"
silences them, "dampen" is AurA (each of the top-k by AUROC scaled by 1 - 2 (AUROC - 0.5)). Per mode: the
share of concepts whose mean probability rose, and the geometric mean of the ratio to the plain one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from neuronlab.errors import NeuronlabError
from neuronlab.registry import Registry

PROMPTS = ("My favourite word is", "Let me tell you about", "The next word is", "I keep thinking about")
MODES: Registry[tuple] = Registry(  # mode -> (how the experts are set, the positions)
    "steering mode",
    tuple,
    entries={
        "force_all": ("force", "all"),
        "force_last": ("force", "last"),
        "zero": ("zero", "all"),
        "dampen": ("dampen", "all"),
    },
)


def word_probability(model, tokenizer, prompts: Sequence[str], word: str) -> float:
    """Mean over `prompts` of the probability that the next token is the first token of " word"."""
    from neuronlab.data.batching import forward_takes, left_padded
    from neuronlab.data.scoring import continuation_ids

    first = [continuation_ids(tokenizer, p, " " + word)[1][0] for p in prompts]
    keep = {"logits_to_keep": 1} if forward_takes(model, "logits_to_keep") else {}  # the last position only
    probs = []
    with torch.no_grad():
        for start, enc in left_padded(model, tokenizer, list(prompts), len(prompts), positions=True):
            logits = model(**enc, use_cache=False, **keep).logits[:, -1].float()
            rows = torch.arange(logits.shape[0])
            probs += logits.softmax(-1)[rows, torch.tensor(first[start : start + len(rows)])].tolist()
    return sum(probs) / len(probs)


def concept_steering(
    model,
    tokenizer,
    expertise,
    concepts: Sequence[str] | None = None,
    k: int = 50,
    prompts: Sequence[str] = PROMPTS,
    modes: Sequence[str] = tuple(MODES),
    progress: bool = True,
) -> dict:
    """Word probabilities plain and under each mode (module doc), per concept and summarised per mode."""
    from neuronlab.intervene.apply import apply
    from neuronlab.intervene.steer import expert_plan
    from neuronlab.progress import progress_bar

    for mode in modes:
        MODES[mode]  # an unknown mode: one error listing the modes, before any work
    if not prompts:
        raise NeuronlabError("give at least one prompt")
    concepts = list(expertise.concepts if concepts is None else concepts)
    per: dict[str, dict] = {}
    bar = progress_bar(len(concepts), "steering concepts", "concept", enabled=progress)
    for concept in concepts:
        row = {"plain": word_probability(model, tokenizer, prompts, concept)}
        for mode in modes:
            how, positions = MODES[mode]
            with apply(model, expert_plan(expertise, concept, k, how, positions)):
                row[mode] = word_probability(model, tokenizer, prompts, concept)
        per[concept] = row
        bar.update()
    bar.close()
    summary = {}
    for mode in modes:
        ratios = [r[mode] / r["plain"] for r in per.values() if r["plain"] > 0 and r[mode] > 0]
        summary[mode] = {
            "raised": sum(r[mode] > r["plain"] for r in per.values()) / len(per),
            "geometric_mean_ratio": math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else float("nan"),
        }
    return {"k": k, "prompts": list(prompts), "modes": summary, "concepts": per}
