"""Tang et al. 2024 (LAPE, arXiv 2402.16438) and Rahmanisa et al. 2025 (arXiv 2507.22581): language-specific neurons.

    nl.study("language", ["gemma-3-270m", "smollm2-135m-instruct"], "runs/language", size="docs")
    nl.study("language", ["m/"], "runs/l", size="smoke", data="texts/", pattern="*.txt", languages=())

The language-neuron pipeline of `neuronlab demo` on FLORES-format text (one file a language; ../shared/data/
flores200_devtest by default): the first `record_lines` lines of each language feed the activation statistics, the
next `eval_lines` are held out. LAPE picks each language's neurons; zeroing them gives the perplexity matrix,
setting them to p_max the Language Steering Shift (LSS) and the generation shift; as many neurons a language found
by attribution (gradient x activation) are evaluated the same way. Each model's folder keeps the pipeline's own
files: stats.safetensors, neurons.json, attribution_neurons.json, results.json and report.html (`neuronlab report`
renders it again) and the neuron browser (view/; `study/language_pipeline.py` runs all this). The figures the
claims are computed from: neurons per layer and language, the relative perplexity change matrix, off-diagonal LSS
per target, generation shares, and the attribution neurons' overlap (Jaccard) and effects.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

from neuronlab.report.plots import bars, by_depth
from neuronlab.study.base import FAILS, HOLDS, UNSURE, Claim, Phases, Study, register_study
from neuronlab.study.language_pipeline import LanguageStudyConfig, own_language_hit, own_language_hits, pipeline


def outer_enrichment(per_layer: list[int]) -> float | None:
    """How much more of the neurons sit in the outer layers (the first and the last sixth of the depth, one layer
    each at least) than the outer layers' share of all layers: 1 is an even spread; None for under 3 layers."""
    n, total = len(per_layer), sum(per_layer)
    k = max(1, round(n / 6))
    if total == 0 or 2 * k >= n:
        return None
    return (sum(per_layer[:k]) + sum(per_layer[n - k :])) / total / (2 * k / n)


def figures_of(res: dict[str, Any]) -> dict[str, Any]:
    """The figures of a pipeline run (its results.json) that the claims need, per-layer counts as lists."""
    n, a = res["model"]["n_layers"], res["attribution"]
    neurons = {lang: [per.get(i, per.get(str(i), 0)) for i in range(n)] for lang, per in res["neurons"].items()}
    return {
        "layers": n,
        "languages": res["languages"],
        "targets": res["targets"],
        "neurons": neurons,
        "neurons_per_layer": [sum(c[i] for c in neurons.values()) for i in range(n)],
        "perplexity": {k: res["perplexity_deactivate"][k] for k in ("baseline", "change")},
        "lss_off_diagonal": res["lss"]["off_diagonal"],
        "lss_items": res["lss"]["n_items"],
        "generation": {k: res["generation"][k] for k in ("baseline", "steered")},
        "attribution": a
        and {
            "method": a["method"],
            "jaccard": a["jaccard"],
            "perplexity_change": a["perplexity_deactivate"]["change"],
            "lss_off_diagonal": a["lss"]["off_diagonal"],
        },
    }


def _mean(values) -> float | None:
    known = [float(v) for v in values if v is not None and not math.isnan(v)]
    return sum(known) / len(known) if known else None


def numbers(f: dict[str, Any]) -> dict[str, float | None]:
    """One model's value for each claim, from its figures alone (NaN entries left out of the shares)."""
    lss, gen, theirs = f["lss_off_diagonal"], f["generation"], (f["attribution"] or {}).get("lss_off_diagonal", {})
    return {
        "depth": outer_enrichment(f["neurons_per_layer"]),
        "own": own_language_hits(f["perplexity"]["change"]),
        "lss": _mean([None if math.isnan(v) else v > 0.5 for v in lss.values()]),
        "generation": _mean([None if math.isnan(b) else gen["steered"][t] > b for t, b in gen["baseline"].items()]),
        "attribution": _mean([lss[t] - v for t, v in theirs.items()]),
    }


def band(value: float | None, holds_at: float, fails_at: float) -> str:
    """Holds at `holds_at` or more, does not hold at `fails_at` or less, inconclusive between (and without a value)."""
    if value is None or math.isnan(value):
        return UNSURE
    return HOLDS if value >= holds_at else FAILS if value <= fails_at else UNSURE


def _compared(figures: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    mean = lambda values: _mean(values) or 0.0  # noqa: E731
    rows: dict[str, dict[str, float]] = {}
    for m, f in figures.items():
        if a := f["attribution"]:
            rows.setdefault("Jaccard", {})[m] = mean(a["jaccard"].values())
            rows.setdefault("LSS\nLAPE", {})[m] = mean(f["lss_off_diagonal"].values())
            rows.setdefault("LSS\nattribution", {})[m] = mean(a["lss_off_diagonal"].values())
            rows.setdefault("own hit\nLAPE", {})[m] = own_language_hits(f["perplexity"]["change"])
            rows.setdefault("own hit\nattribution", {})[m] = own_language_hits(a["perplexity_change"])
    return rows


def _rise(change: dict[str, dict[str, float]], t: str) -> float:
    """(1 + own-language change) / (1 + the largest change on another language) when t's neurons are zeroed."""
    return (1 + change[t][t]) / (1 + max(v for lang, v in change[t].items() if lang != t))


SHARE_RULE = "holds for a share of 0.7 or more, does not hold at 0.5 or less, inconclusive between"


@register_study
class Language(Study):
    name = "language"
    paper = "Tang et al. 2024, arXiv 2402.16438; Rahmanisa et al. 2025, arXiv 2507.22581"
    title = "Language-specific neurons (LAPE), deactivated and amplified"
    config = LanguageStudyConfig
    sizes: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": dict(languages=("arb_Arab", "eng_Latn", "fra_Latn", "zho_Hans"), record_lines=12, eval_lines=3,
                      lss_items=3, prompts=2, max_new_tokens=8, attribution_lines=4, max_length=128),
        "docs": dict(record_lines=60, eval_lines=6, lss_items=6, prompts=2, attribution_lines=10),  # 14 languages
        "paper": dict(record_lines=800, eval_lines=200, lss_items=50, prompts=10, max_new_tokens=32,
                      attribution_lines=100),
    }  # fmt: skip

    def summary(self, figures: dict[str, dict[str, Any]], cfg: LanguageStudyConfig) -> dict[str, dict[str, str]]:
        rows: dict[str, dict[str, str]] = {}
        for m, f in figures.items():
            counts = sorted((sum(c), lang.split("_")[0]) for lang, c in f["neurons"].items())
            per = f["neurons_per_layer"]
            rows.setdefault("neurons per language (fewest first)", {})[m] = ", ".join(f"{x} {n}" for n, x in counts)
            rows.setdefault("neuron-language pairs by layer", {})[m] = ", ".join(map(str, per))
            hit = own_language_hit(f["perplexity"]["change"])
            rows.setdefault("zeroed: the own language is hurt most", {})[m] = (
                f"{len(hit)} of {len(f['targets'])}: {', '.join(t.split('_')[0] for t in hit)}"
            )
            lss = [v for v in f["lss_off_diagonal"].values() if not math.isnan(v)]
            rows.setdefault("at p_max: LSS off the diagonal, lowest / mean", {})[m] = (
                f"{min(lss):.2f} / {sum(lss) / len(lss):.2f}" if lss else "n/a"
            )
            gen = f["generation"]
            rows.setdefault("generations in the target language: plain -> at p_max (mean)", {})[m] = (
                f"{_mean(gen['baseline'].values()) or 0:.2f} -> {_mean(gen['steered'].values()) or 0:.2f}"
            )
            if a := f["attribution"]:
                rows.setdefault(f"{a['method']} neurons: Jaccard with LAPE's, mean", {})[m] = (
                    f"{_mean(a['jaccard'].values()) or 0:.2f}"
                )
                rows.setdefault(f"{a['method']} neurons zeroed: own language hurt most", {})[m] = (
                    f"{len(own_language_hit(a['perplexity_change']))} of {len(a['perplexity_change'])}"
                )
                rows.setdefault(f"{a['method']} neurons at p_max: LSS off the diagonal, mean", {})[m] = (
                    f"{_mean(a['lss_off_diagonal'].values()) or 0:.2f}"
                )
        return rows

    def measure(self, model, tokenizer, cfg: LanguageStudyConfig, out: Path, phases: Phases) -> dict[str, Any]:
        return figures_of(pipeline(model, tokenizer, cfg, out, phases))

    def claims(self, figures: dict[str, dict[str, Any]], cfg: LanguageStudyConfig) -> list[Claim]:
        got = {m: numbers(f) for m, f in figures.items()}
        value = lambda key: {m: g[key] for m, g in got.items()}  # noqa: E731
        verdicts = lambda key, holds, fails: {m: band(g[key], holds, fails) for m, g in got.items()}  # noqa: E731
        targets = list(dict.fromkeys(t for f in figures.values() for t in f["targets"]))
        by_target = lambda get: {  # noqa: E731
            t: {m: get(f, t) for m, f in figures.items() if t in f["targets"]} for t in targets
        }
        return [
            Claim(
                "Language-specific neurons sit mostly in the bottom and the top layers",
                "the outer layers' share of the LAPE neurons (each language's counted; the outer layers are the "
                "first and the last sixth of the depth) over their share of all layers (1: spread evenly)",
                "holds at 1.5 or more, does not hold at 1 or less, inconclusive between",
                value("depth"),
                verdicts("depth", 1.5, 1),
                figure=by_depth(
                    {
                        m: [c / max(sum(f["neurons_per_layer"]), 1) for c in f["neurons_per_layer"]]
                        for m, f in figures.items()
                    },
                    "share of the LAPE neurons",
                    "LAPE neurons by depth (all languages)",
                ),
            ),
            Claim(
                "Deactivating a language's neurons raises its own perplexity most",
                "share of languages whose zeroed neurons raise their own perplexity more than any other language's",
                SHARE_RULE,
                value("own"),
                verdicts("own", 0.7, 0.5),
                figure=bars(
                    by_target(lambda f, t: _rise(f["perplexity"]["change"], t)),
                    "own perplexity rise / largest elsewhere",
                    "neurons zeroed: above 1, the own language is hit hardest",
                    log_y=True,
                ),
            ),
            Claim(
                "Amplifying a language's neurons steers toward it: the object in that language becomes likelier",
                f"share of target languages whose mean off-diagonal LSS (items in the other languages; neurons set to "
                f"{cfg.amplify}) is above 0.5",
                SHARE_RULE,
                value("lss"),
                verdicts("lss", 0.7, 0.5),
                figure=bars(
                    by_target(lambda f, t: f["lss_off_diagonal"][t]), "off-diagonal LSS", "LSS (0.5: no shift)"
                ),
            ),
            Claim(
                "Amplifying a language's neurons makes generations from other languages' prompts switch to it",
                "share of target languages for which more greedy generations are identified as the target with the "
                "neurons amplified than without",
                SHARE_RULE,
                value("generation"),
                verdicts("generation", 0.7, 0.5),
                figure=bars(
                    {
                        t: {
                            f"{m} {k}": f["generation"][k][t]
                            for m, f in figures.items()
                            if t in f["targets"]
                            for k in ("baseline", "steered")
                        }
                        for t in targets
                    },
                    "share of generations in the target",
                    "generations identified as the target (baseline: plain model)",
                ),
            ),
            Claim(
                "LAPE's neurons steer toward their language better than as many neurons found by attribution "
                "(neuronlab's comparison, not a paper's claim)",
                f"mean over targets of LAPE's off-diagonal LSS minus that of the attribution ({cfg.attribution}) "
                "neurons; the figure adds the two sets' overlap (Jaccard) and deactivation hits",
                "holds at 0.05 or more, does not hold at 0 or less, inconclusive between (and without attribution)",
                value("attribution"),
                verdicts("attribution", 0.05, 0),
                figure=bars(_compared(figures), "mean over targets", "LAPE against attribution neurons"),
            ),
        ]
