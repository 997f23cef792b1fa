"""Merullo et al. 2024 (arXiv 2305.16130): FFN outputs as additive vectors, word2vec-style.

    nl.study("arithmetic", ["gemma-3-270m"], "runs/arith", size="docs")

For each relation (world capitals, past tense, capitalisation; the files of ../shared/data/relations) the pairs are
shuffled (seed) and split: `pairs` to extract o-vectors from, `pairs` held out; few-shot prompts ("The capital of {x}
is {y}", else "{x}: {y}"). Measured on every model: held-out accuracy (first token, top 1); the logit lens at the
last position (mean reciprocal rank of the argument's first token and of the answer's after every layer; the
hand-off is the first layer after which the answer outranks an argument that led); the o-vector (mean FFN output of
a layer at the last position of the extraction prompts) added at the last position of held-out prompts that carry
no relation ("table mug free Poland"), by layer, against a random vector of the same norm at the best layer; and
held-out accuracy with every FFN output from layer l on set to zero.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from neuronlab.analyze.arithmetic import (
    ablate_from,
    extract_o_vector,
    patch_o_vector,
    read_pairs,
    relation_items,
    score_relation,
)
from neuronlab.analyze.lens import logit_lens
from neuronlab.config import Config, option
from neuronlab.errors import NeuronlabError
from neuronlab.models.sites import decoder_layers
from neuronlab.progress import progress_bar
from neuronlab.report.plots import bars, by_depth
from neuronlab.study.base import FAILS, HOLDS, UNSURE, Claim, Phases, Study, above, register_study

RELATIONS = {  # name -> (file under the data folder, template)
    "capital": ("merullo/world_capitals.csv", "The capital of {x} is {y}"),
    "past_tense": ("function_vectors/present-past.json", "{x}: {y}"),
    "capitalize": ("function_vectors/capitalize.json", "{x}: {y}"),
}
NONSENSE = "table mug free"


@dataclass(frozen=True)
class ArithmeticConfig(Config):
    relations: tuple[str, ...] = option(tuple(RELATIONS), "relations to study: capital, past_tense, capitalize")
    pairs: int = option(40, "pairs per relation to extract o-vectors from, and as many held out")
    shots: int = option(2, "worked examples in each prompt")
    data: str = option("../shared/data/relations", "folder of the relation files (merullo/, function_vectors/)")
    seed: int = option(0, "seed of the pair split, the shots and the random control vector")

    def check(self) -> None:
        bad = [r for r in self.relations if r not in RELATIONS]
        if bad or not self.relations:
            raise NeuronlabError(f"relations must be among {', '.join(RELATIONS)}, not {list(self.relations)}")
        if self.pairs < 2 or self.shots < 0:
            raise NeuronlabError("pairs must be at least 2 and shots at least 0")


def _mean_rr(lens: dict) -> list[float]:
    return [sum(1 / (1 + r) for r in e["target_rank"]) / len(e["target_rank"]) for e in lens["layers"].values()]


def _relation(model, tok, pairs: list[tuple[str, str]], template: str, cfg: ArithmeticConfig, phases) -> dict:
    pairs = list(dict.fromkeys(pairs))
    random.Random(cfg.seed).shuffle(pairs)
    if len(pairs) < 2 * cfg.pairs:
        raise NeuronlabError(f"{len(pairs)} pairs: fewer than the 2 x {cfg.pairs} the study needs (lower pairs=)")
    train, held = pairs[: cfg.pairs], pairs[cfg.pairs : 2 * cfg.pairs]
    items = relation_items(train + held, template, shots=cfg.shots, seed=cfg.seed)
    train_items, held_items = items[: len(train)], items[len(train) :]
    n = len(decoder_layers(model))
    with phases("accuracy and logit lens"):
        accuracy = score_relation(model, tok, held_items)["accuracy"]
        prompts = [i["prompt"] for i in held_items]
        answer = _mean_rr(logit_lens(model, tok, prompts, [i["target"] for i in held_items], k=1))
        argument = _mean_rr(logit_lens(model, tok, prompts, [" " + x for x, _ in held], k=1))
    led = [i for i in range(n) if argument[i] > answer[i]]
    handoff = next((i for i in range(led[0], n) if answer[i] > argument[i]), None) if led else None
    nonsense = [{"prompt": f"{NONSENSE} {x}", "target": f" {y}"} for x, y in held]
    with phases("o-vector patching"):
        plain = score_relation(model, tok, nonsense, exact=False)["accuracy"]
        extract = [i["prompt"] for i in train_items]
        vectors, patched = {}, []
        with progress_bar(n, desc="o-vector at each layer", unit="layer") as bar:
            for layer in range(n):
                vectors[layer] = extract_o_vector(model, tok, extract, layer)
                patched.append(patch_o_vector(model, tok, vectors[layer], [layer], nonsense, exact=False)["accuracy"])
                bar.update()
        best = max(range(n), key=lambda i: patched[i])
        rand = torch.randn(vectors[best].shape, generator=torch.Generator().manual_seed(cfg.seed))
        control = rand / rand.norm() * vectors[best].norm()
        random_acc = patch_o_vector(model, tok, control, [best], nonsense, exact=False)["accuracy"]
    with phases("ablation"):
        ablated = ablate_from(model, tok, held_items, exact=False)
    return {
        "extract": len(train),
        "held_out": len(held),
        "template": template,
        "accuracy": accuracy,
        "lens": {"answer_rr": answer, "argument_rr": argument, "handoff_layer": handoff, "layers": n},
        "patching": {"unpatched": plain, "by_layer": patched, "best_layer": best, "random_same_norm": random_acc},
        "ablation": [ablated[i]["accuracy"] for i in sorted(ablated)],
    }


@register_study
class Arithmetic(Study):
    name = "arithmetic"
    paper = "Merullo et al. 2024, arXiv 2305.16130"
    title = "FFN outputs as additive vectors (vector arithmetic)"
    config = ArithmeticConfig
    sizes: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"pairs": 8, "relations": ("capital",)},
        "docs": {"pairs": 40},
        "paper": {"pairs": 100},
    }

    def measure(self, model, tokenizer, cfg: ArithmeticConfig, out: Path, phases: Phases) -> dict[str, Any]:
        data = Path(cfg.data)
        relations = {}
        for name in cfg.relations:
            file, template = RELATIONS[name]
            relations[name] = _relation(model, tokenizer, read_pairs(data / file), template, cfg, phases)
        return {"relations": relations, "nonsense": NONSENSE}

    def summary(self, figures: dict[str, dict[str, Any]], cfg: ArithmeticConfig) -> dict[str, dict[str, str]]:
        rows: dict[str, dict[str, str]] = {}
        for m, f in figures.items():
            for k, r in f["relations"].items():
                lens, patch, n = r["lens"], r["patching"], r["lens"]["layers"]
                hand = "never" if lens["handoff_layer"] is None else f"layer {lens['handoff_layer']}"
                rows.setdefault(f"{k}: held-out accuracy", {})[m] = f"{r['accuracy']:.2f}"
                rows.setdefault(f"{k}: logit lens, the answer overtakes the argument", {})[m] = f"{hand} of {n}"
                where = f"layer {patch['best_layer']}" if max(patch["by_layer"]) > 0 else "every layer"
                rows.setdefault(f"{k}: o-vector at the best layer (unpatched; random vector)", {})[m] = (
                    f"{max(patch['by_layer']):.2f} at {where} ({patch['unpatched']:.2f}; "
                    f"{patch['random_same_norm']:.2f})"
                )
                rows.setdefault(f"{k}: FFN outputs zeroed from layer 0 / the middle / the last", {})[m] = " / ".join(
                    f"{r['ablation'][i]:.2f}" for i in (0, len(r["ablation"]) // 2, -1)
                )
        return rows

    def claims(self, figures: dict[str, dict[str, Any]], cfg: ArithmeticConfig) -> list[Claim]:
        rel = {m: f["relations"] for m, f in figures.items()}
        handoff = {
            m: sum(r["lens"]["handoff_layer"] is not None for r in rs.values()) / len(rs) for m, rs in rel.items()
        }
        depth = {
            m: [
                r["lens"]["handoff_layer"] / (r["lens"]["layers"] - 1)
                for r in rs.values()
                if r["lens"]["handoff_layer"] is not None
            ]
            for m, rs in rel.items()
        }
        lift = {
            m: sum(
                max(r["patching"]["by_layer"]) - max(r["patching"]["unpatched"], r["patching"]["random_same_norm"])
                for r in rs.values()
            )
            / len(rs)
            for m, rs in rel.items()
        }
        accuracy = {m: sum(r["accuracy"] for r in rs.values()) / len(rs) for m, rs in rel.items()}
        drop = {
            m: sum(r["accuracy"] - r["ablation"][len(r["ablation"]) // 2] for r in rs.values()) / len(rs)
            for m, rs in rel.items()
        }
        return [
            Claim(
                "In mid-to-late layers the argument gives way to the answer: the logit lens ranks the argument first, "
                "then the answer",
                "share of relations where the answer overtakes the argument after the argument led (mean relative "
                "depth of the hand-off in the table's figure)",
                "holds when it happens for more than half of the relations, at a relative depth of 0.3 or more on "
                "average; does not hold when it happens for at most half",
                dict(handoff),
                {
                    m: (HOLDS if handoff[m] > 0.5 and sum(depth[m]) / len(depth[m]) >= 0.3 else UNSURE)
                    if handoff[m] > 0.5
                    else FAILS
                    for m in rel
                },
                figure=by_depth(
                    {
                        f"{m} {k} {w}": r["lens"][f"{w}_rr"]
                        for m, rs in rel.items()
                        for k, r in rs.items()
                        for w in ("argument", "answer")
                    },
                    "mean reciprocal rank",
                    "logit lens: argument vs answer",
                ),
            ),
            Claim(
                "An o-vector, the FFN output of one layer averaged over the relation's prompts, added to a context "
                f'that carries no relation ("{NONSENSE} x"), moves it to the answer',
                "held-out accuracy with the o-vector at the best layer, minus the larger of the unpatched accuracy "
                "and that of a random vector of the same norm (mean over relations; the best layer is chosen on "
                "the held-out items, so this is an upper bound)",
                "holds at a gain of 0.2 or more, does not hold at 0.05 or less, inconclusive between",
                dict(lift),
                {m: HOLDS if lift[m] >= 0.2 else FAILS if lift[m] <= 0.05 else UNSURE for m in rel},
                figure=by_depth(
                    {f"{m} {k}": r["patching"]["by_layer"] for m, rs in rel.items() for k, r in rs.items()},
                    "held-out accuracy",
                    f"o-vector added at one layer ({NONSENSE} x)",
                ),
            ),
            Claim(
                "The FFN outputs of the later layers carry the answer: zeroing them from the middle layer on lowers "
                "the task's accuracy",
                "held-out accuracy minus accuracy with every FFN output from the middle layer on set to zero (mean "
                "over relations)",
                "holds when the drop exceeds 0.1, does not hold otherwise",
                dict(drop),
                {m: above(drop[m], 0.1) for m in rel},
                figure=by_depth(
                    {f"{m} {k}": r["ablation"] for m, rs in rel.items() for k, r in rs.items()},
                    "held-out accuracy",
                    "FFN outputs zeroed from layer l on",
                ),
            ),
            Claim(
                "The model does the task: few-shot prompts are answered above chance",
                "held-out accuracy (first token, top 1), mean over relations",
                "holds above 0.3, does not hold below",
                dict(accuracy),
                {m: above(accuracy[m], 0.3) for m in rel},
                figure=bars(
                    {k: {m: rs[k]["accuracy"] for m, rs in rel.items() if k in rs} for k in cfg.relations},
                    "held-out accuracy",
                    "task accuracy",
                ),
            ),
        ]
