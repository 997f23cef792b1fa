"""Expert neurons on a real pretrained model (Fedzechkina et al. 2025): alignment with human similarity ratings.

Words: `rated_words` picks --words words of SimLex-999, WordSim-353 and RG-65 (from ../shared/data) that cover
as many rated pairs as it can, among the words the model's tokenizer has as one token (" word"), plus the words
of the first --triplets THINGS odd-one-out triplets whose three words are such tokens. The model writes
--per-concept sentences for each (its chat template if it is an instruct model); negatives are --negatives times
as many of the other words' sentences. Then `find_experts`, `align` against each rating set (Spearman with 95%
bootstrap intervals, the embedding baselines, THINGS agreement), and `concept_steering` (force, zero, dampen
the top-50 experts; probability of the word). Writes results.json and spearman.png into --out.

    python examples/real_experts.py --model gemma-3-270m --out runs/experts-gemma --dtype bfloat16
    python examples/real_experts.py --model smollm2-135m-instruct --out runs/experts-smollm2 --dtype bfloat16
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from _study import load, parser  # examples/_study.py, beside this script

import neuronlab as nl
from neuronlab.analyze.alignment import align, jaccard_matrix, odd_one_out, rated_words, read_ratings, read_triplets
from neuronlab.analyze.find_experts import find_experts, load_baselines
from neuronlab.evaluate.concept_steering import concept_steering
from neuronlab.report.plots import intervals

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = {"SimLex-999": "EN-SIMLEX-999.txt", "WordSim-353": "EN-WS-353-ALL.txt", "RG-65": "EN-RG-65.txt"}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--words", type=int, default=150, help="rated words to take")
    ap.add_argument("--triplets", type=int, default=10, help="THINGS triplets whose words to add")
    ap.add_argument("--per-concept", type=int, default=8)
    ap.add_argument("--negatives", type=float, default=4.0)
    args = ap.parse_args()
    start = time.monotonic()
    model, tok = load(args)
    one_token = lambda w: len(tok(" " + w, add_special_tokens=False)["input_ids"]) == 1  # noqa: E731
    ratings = {name: read_ratings(SHARED / "word_similarity" / file) for name, file in SETS.items()}
    words = rated_words([r for rs in ratings.values() for r in rs], args.words, one_token)
    triplets = read_triplets(SHARED / "things" / "things_testset2_human_ooo_counts.csv")
    usable = [t for t in triplets if all(one_token(w) for w in t[:3])][: args.triplets]
    words = list(dict.fromkeys(words + [w for t in usable for w in t[:3]]))
    timings = {}
    t = time.monotonic()
    ex = find_experts(
        model, tok, args.out, words=words, per_concept=args.per_concept, negatives=args.negatives, drop_unwritten=True
    )
    timings["find_experts"] = time.monotonic() - t
    print(ex.summary())
    baselines = load_baselines(args.out)
    results = {
        "model": str(args.model),
        "dtype": args.dtype or "checkpoint",
        "words_asked": len(words),
        "concepts": len(ex.concepts),
        "per_concept": args.per_concept,
        "negatives": args.negatives,
        "experts": {str(tau): ex.experts(tau).total() for tau in (0.5, 0.7, 0.9)},
        "chance_ap": sum(ex.chance) / len(ex.chance),
        "alignment": {},
    }
    figure = {}
    for name, rs in ratings.items():
        covered = {c.lower() for c in ex.concepts}
        if sum(a in covered and b in covered and a != b for a, b, _ in rs) < 3:
            print(f"{name}: fewer than 3 rated pairs covered; skipped")
            continue
        al = align(ex, rs, baselines=baselines)
        keys = ["spearman", "ap_cosine", *baselines]
        results["alignment"][name] = {
            "pairs": al["pairs"],
            "jaccard_by_tau": al["jaccard"],
            **{k: {"rho": al[k], "interval": al["intervals"][k]} for k in keys},
        }
        figure[f"{name}\n({al['pairs']} pairs)"] = {
            ("expert Jaccard" if k == "spearman" else k.replace("_", " ")): (al[k], al["intervals"][k]) for k in keys
        }
        print(
            f"{name}: {al['pairs']} pairs; "
            + "  ".join(f"{k} {al[k]:+.3f} [{al['intervals'][k][0]:+.2f}, {al['intervals'][k][1]:+.2f}]" for k in keys)
        )
    sim = jaccard_matrix(ex.experts(0.5), ex.concepts)
    results["odd_one_out"] = odd_one_out(sim, ex.concepts, triplets)
    print(f"THINGS odd one out: {results['odd_one_out']}")
    t = time.monotonic()
    steer = concept_steering(model, tok, ex, k=50)
    timings["concept_steering"] = time.monotonic() - t
    results["steering"] = {"k": 50, "prompts": steer["prompts"], "modes": steer["modes"]}
    nl.io.write_json(args.out / "steering.json", steer)
    for mode, m in steer["modes"].items():
        print(f"{mode}: word likelier for {m['raised']:.0%}; probability x{m['geometric_mean_ratio']:.2f}")
    results["seconds"] = {**timings, "total": time.monotonic() - start}
    nl.io.write_json(args.out / "results.json", results)
    (args.out / "spearman.png").write_bytes(
        intervals(figure, "Spearman vs people", f"{args.model}: similarity against human ratings")
    )
    print(json.dumps(results["seconds"]))


if __name__ == "__main__":
    main()
