"""Word2vec-style vector arithmetic on a real pretrained model (Merullo et al. 2024).

For each relation (world capitals, past tense, capitalisation; ../shared/data/relations) the pairs are shuffled
(seed 0) and split: --n pairs to extract o-vectors from, --n held out. Few-shot prompts (2 shots; "The capital of {x}
is {y}", else "{x}: {y}").
1. Task accuracy on the held-out prompts (first token top-1).
2. Logit lens at the last position of the held-out prompts: mean reciprocal rank of the argument's first token
   (" Poland") and of the answer's (" Warsaw") after every layer; the hand-off layer is the first after which
   the answer outranks the argument.
3. o-vectors: the mean FFN output of layer l at the last position of the extraction prompts, added at the last
   position of held-out prompts that carry no relation ("table mug free Poland"); accuracy against the same
   prompts unpatched, and against a random vector of the same norm at the best layer.
4. Ablation: held-out accuracy with every FFN output from layer l on set to zero, for each l.
Writes results.json, lens.png, patching.png and ablation.png into --out.

    python examples/real_arithmetic.py --model gemma-3-270m --out runs/arith-gemma
    python examples/real_arithmetic.py --model smollm2-135m-instruct --out runs/arith-smollm2
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch
from _study import load, parser  # examples/_study.py, beside this script

import neuronlab as nl
from neuronlab.analyze.arithmetic import (
    ablate_from,
    extract_o_vector,
    patch_o_vector,
    read_pairs,
    relation_items,
    score_relation,
)
from neuronlab.analyze.lens import logit_lens
from neuronlab.models.sites import decoder_layers
from neuronlab.report.plots import lines

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "relations"
RELATIONS = {
    "capital": (SHARED / "merullo" / "world_capitals.csv", "The capital of {x} is {y}"),
    "past_tense": (SHARED / "function_vectors" / "present-past.json", "{x}: {y}"),
    "capitalize": (SHARED / "function_vectors" / "capitalize.json", "{x}: {y}"),
}
NONSENSE = "table mug free"


def mean_rr(lens: dict) -> list[float]:
    return [sum(1 / (1 + r) for r in e["target_rank"]) / len(e["target_rank"]) for e in lens["layers"].values()]


def study(model, tok, pairs: list[tuple[str, str]], template: str, n: int) -> dict:
    pairs = list(dict.fromkeys(pairs))
    random.Random(0).shuffle(pairs)
    train, held = pairs[:n], pairs[n : 2 * n]
    items = relation_items(train + held, template, shots=2)
    train_items, held_items = items[: len(train)], items[len(train) :]
    layers = len(decoder_layers(model))
    out = {"pairs": len(pairs), "extract": len(train), "held_out": len(held), "template": template}
    out["accuracy"] = score_relation(model, tok, held_items)["accuracy"]
    prompts = [i["prompt"] for i in held_items]
    answer = mean_rr(logit_lens(model, tok, prompts, [i["target"] for i in held_items], k=1))
    argument = mean_rr(logit_lens(model, tok, prompts, [" " + x for x, _ in held], k=1))
    led = [i for i in range(layers) if argument[i] > answer[i]]  # the argument outranks the answer here
    handoff = next((i for i in range(led[0], layers) if answer[i] > argument[i]), None) if led else None
    out["lens"] = {
        "answer_rr": answer,
        "argument_rr": argument,
        "argument_peak": argument.index(max(argument)),
        "handoff_layer": handoff,
    }
    nonsense = [{"prompt": f"{NONSENSE} {x}", "target": f" {y}"} for x, y in held]
    plain = score_relation(model, tok, nonsense, exact=False)
    patched = {}
    for layer in range(layers):
        vec = extract_o_vector(model, tok, [i["prompt"] for i in train_items], layer)
        patched[layer] = patch_o_vector(model, tok, vec, [layer], nonsense, exact=False)["accuracy"]
    best = max(patched, key=patched.get)
    vec = extract_o_vector(model, tok, [i["prompt"] for i in train_items], best)
    g = torch.Generator().manual_seed(0)
    rand = torch.randn(vec.shape, generator=g)
    control = patch_o_vector(model, tok, rand / rand.norm() * vec.norm(), [best], nonsense, exact=False)["accuracy"]
    out["patching"] = {
        "unpatched": plain["accuracy"],
        "by_layer": patched,
        "best_layer": best,
        "best": patched[best],
        "random_same_norm": control,
    }
    ablated = ablate_from(model, tok, held_items, exact=False)
    out["ablation"] = {start: s["accuracy"] for start, s in ablated.items()}
    return out


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--n", type=int, default=50, help="pairs to extract from, and as many held out")
    args = ap.parse_args()
    start = time.monotonic()
    model, tok = load(args)
    results = {
        "model": args.model,
        "dtype": args.dtype or "checkpoint",
        "shots": 2,
        "nonsense": NONSENSE,
        "relations": {},
    }
    for name, (file, template) in RELATIONS.items():
        t = time.monotonic()
        r = study(model, tok, read_pairs(file), template, args.n)
        r["seconds"] = time.monotonic() - t
        results["relations"][name] = r
        p = r["patching"]
        print(
            f"{name}: accuracy {r['accuracy']:.2f}; hand-off after layer {r['lens']['handoff_layer']}; o-vector "
            f"of layer {p['best_layer']}: {p['unpatched']:.2f} -> {p['best']:.2f} "
            f"(random {p['random_same_norm']:.2f}); "
            f"ablation from layer 0 / last: {r['ablation'][0]:.2f} / {r['ablation'][max(r['ablation'])]:.2f}"
        )
    results["seconds"] = time.monotonic() - start
    args.out.mkdir(parents=True, exist_ok=True)
    nl.io.write_json(args.out / "results.json", results)
    rel = results["relations"]
    layers = list(range(len(next(iter(rel.values()))["ablation"])))
    (args.out / "lens.png").write_bytes(
        lines(
            {f"{k} {w}": v["lens"][f"{w}_rr"] for k, v in rel.items() for w in ("argument", "answer")},
            layers,
            "layer",
            "mean reciprocal rank",
            f"{args.model}: logit lens, argument vs answer",
        )
    )
    (args.out / "patching.png").write_bytes(
        lines(
            {k: [v["patching"]["by_layer"][i] for i in layers] for k, v in rel.items()},
            layers,
            "layer",
            "held-out accuracy",
            f"{args.model}: o-vector added at one layer ({NONSENSE} x)",
        )
    )
    (args.out / "ablation.png").write_bytes(
        lines(
            {k: [v["ablation"][i] for i in layers] for k, v in rel.items()},
            layers,
            "FFN outputs zeroed from layer",
            "held-out accuracy",
            f"{args.model}: FFN ablation",
        )
    )
    print(json.dumps({"seconds": results["seconds"]}))


if __name__ == "__main__":
    main()
