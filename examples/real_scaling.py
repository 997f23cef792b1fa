"""Activation scaling on a real pretrained model (Stoehr et al. 2024): learned interventions that flip a
prediction, on held-out prompts.

Tasks (`neuronlab.data.contrast`): pronoun (" she" after a girl's name, " he" after a boy's), IOI (the name not
repeated) and capital (the true capital, not the one the context states). First the model's own accuracy
(target above foil) on each; then, on the swapped task (flip she/he, give the repeated name, follow the
context), `fit_task` learns ActivScalar (one scalar per site and position from the end), SteerVec (one vector
per site and position: the steering-vector baseline) and DynScalar (a scalar function of the activation) on
75% of the groups (names, name pairs, countries) and reports the held-out 25%: flip rate, target-above-foil
share, KL on the other tokens, parameters and parameters moved. ActivScalar and DynScalar are then applied to
the same held-out groups written in other templates (other prompt lengths). Epochs are capped (--epochs,
patience 8) to fit 2 cores. Writes results.json and one folder per run (learned.safetensors, plan.json,
metrics.json, scalars.png) into --out.

    python examples/real_scaling.py --model gemma-3-270m --out runs/scaling-gemma
    python examples/real_scaling.py --model smollm2-135m-instruct --out runs/scaling-smollm2
"""

from __future__ import annotations

import dataclasses
import json
import time

from _study import load, parser  # examples/_study.py, beside this script

import neuronlab as nl
from neuronlab.data.contrast import capital_task, distinguishable, ioi_task, pronoun_task, split
from neuronlab.learn.runs import fit_task
from neuronlab.learn.scalars import ScalingConfig, evaluate_scaling, init_scaling

OTHER = {  # the same groups in templates of other lengths
    "pronoun": lambda swap: pronoun_task(
        templates=(
            "There was a {kind} called {name}. Every day,",
            (
                "Once upon a time, in a small house, there lived a little {kind}. "
                "The {kind}'s name was {name}. One sunny morning,"
            ),
        ),
        swap=swap,
    ),
    "ioi": lambda swap: ioi_task(
        templates=(
            "After {a} and {b} met, {b} said hello to",
            (
                "On a long and rainy afternoon, {a} and {b} stayed inside the old "
                "library together, and later {b} handed the book to"
            ),
        ),
        swap=swap,
    ),
    "capital": lambda swap: capital_task(
        template="Some say the capital of {country} is {wrong}. In truth, the capital of {country} is", swap=swap
    ),
}
TASKS = {"pronoun": pronoun_task, "ioi": lambda swap: ioi_task(n_items=120, swap=swap), "capital": capital_task}
METHODS = ("activscalar", "steervec", "dynscalar")
KEYS = ("flip_rate", "success", "accuracy_before", "kl", "parameters", "moved", "logit_diff_change")


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--epochs", type=int, default=40)
    args = ap.parse_args()
    start = time.monotonic()
    model, tok = load(args)
    identity = init_scaling(model, ScalingConfig(), 1)
    results = {"model": args.model, "dtype": args.dtype or "checkpoint", "epochs_cap": args.epochs, "tasks": {}}
    for task, build in TASKS.items():
        plain = evaluate_scaling(model, tok, identity, distinguishable(build(swap=False), tok)[0])
        row = {"model_accuracy": plain["accuracy_before"], "logit_diff": plain["logit_diff_before"], "runs": {}}
        print(
            f"{task}: the model puts the target above the foil for {plain['accuracy_before']:.0%} "
            f"(mean logit difference {plain['logit_diff_before']:+.2f})"
        )
        items = distinguishable(build(swap=True), tok)[0]  # e.g. " Tim" / " Timmy" share a first token on Gemma
        _, held = split(items, 0.25, 0)
        other = [i for i in distinguishable(OTHER[task](swap=True), tok)[0] if i["group"] in {h["group"] for h in held}]
        for method in METHODS:
            cfg = dataclasses.replace(ScalingConfig(), method=method, epochs=args.epochs, patience=8)
            t = time.monotonic()
            learned, metrics = fit_task(model, tok, items, cfg, 0.25, progress=False, out=args.out / f"{task}-{method}")
            run = {
                "seconds": time.monotonic() - t,
                "epochs": metrics["epochs"],
                "held_out": {k: metrics["held_out"][k] for k in KEYS},
                "train": {k: metrics["train"][k] for k in KEYS},
            }
            if method != "steervec":
                m = evaluate_scaling(model, tok, learned, other)
                run["other_lengths"] = {k: m[k] for k in KEYS}
            row["runs"][method] = run
            h = run["held_out"]
            flip = "n/a" if h["flip_rate"] is None else f"{h['flip_rate']:.2f}"
            extra = f"; other lengths flip {run['other_lengths']['flip_rate']}" if "other_lengths" in run else ""
            print(
                f"  {method}: held-out flip rate {flip}, target>foil {h['success']:.2f}, KL {h['kl']:.3f}, "
                f"{h['parameters']} parameters ({h['moved']} moved), {run['epochs']} epochs, "
                f"{run['seconds']:.0f} s{extra}"
            )
        results["tasks"][task] = row
    results["seconds"] = time.monotonic() - start
    nl.io.write_json(args.out / "results.json", results)
    print(json.dumps({"seconds": results["seconds"]}))


if __name__ == "__main__":
    main()
