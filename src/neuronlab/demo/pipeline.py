"""The language-neuron pipeline behind `neuronlab demo`: record -> LAPE -> deactivate / amplify -> perplexity
matrix, LSS matrix, generation shift, factor sweep; attribution neurons (as many per language as LAPE's) against
LAPE's -> report.html and the neuron browser view/index.html, with every artifact saved beside them.

    model, tok = nl.load_model(DEMO_MODEL)
    results = run(model, tok, read_text_dir(DEMO_DATA), "out/", PipelineConfig())
    results = run_demo(model, tok, "out/", PipelineConfig(), data=None)    # the same: what `neuronlab demo` calls

Texts of each language are split by line: the first `record_lines` feed the statistics, the next
`eval_lines` are held out for perplexity, LSS items and generation prompts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from neuronlab.analyze.alignment import jaccard
from neuronlab.config import Config, configured, option
from neuronlab.data.corpora import read_text_dir
from neuronlab.data.tasks import lss_items_from_texts, prompts_from_texts
from neuronlab.errors import NeuronlabError
from neuronlab.evaluate.steering import factor_sweep, generation_shift, lss_matrix, perplexity_matrix
from neuronlab.intervene.steer import steering_plan
from neuronlab.io import check_writable, write_json
from neuronlab.record.recorder import record
from neuronlab.report.browser import top_neurons, write_browser
from neuronlab.report.language import write_report
from neuronlab.select.attribution import attribute, attribution_neurons
from neuronlab.select.lape import activated, lape
from neuronlab.select.neuron_set import NeuronSet

DEMO_DIR = Path(__file__).parent
DEMO_MODEL = DEMO_DIR / "model"
DEMO_DATA = DEMO_DIR / "data"


@dataclass(frozen=True)
class PipelineConfig(Config):
    record_lines: int = option(250, "lines per language for the statistics")
    eval_lines: int = option(60, "held-out lines per language for evaluation")
    top_rate: float = option(0.15, "LAPE: share of all neurons kept")
    filter_rate: float = option(0.95, "LAPE: activation-probability filter quantile")
    activation_bar_ratio: float = option(0.95, "LAPE: quantile to assign a language")
    pooled_texts: int = option(100, "texts per language for p_max / p_median")
    amplify: str = option("p_max", "steering variant for LSS and generation")
    lss_items: int = option(50, "LSS items per language")
    prompts: int = option(10, "generation prompts per language")
    max_new_tokens: int = option(24, "tokens generated per prompt")
    amplify_perplexity: bool = option(True, "also the perplexity matrix under amplification")
    factors: tuple[float, ...] = option(
        (2.0, 4.0, 8.0), "sweep: scale factors; repeatable (none: no sweep)", "--factor"
    )
    sweep_lines: int = option(40, "sweep: held-out lines per language for perplexity")
    sweep_items: int = option(20, "sweep: LSS items per language")
    max_ppl_increase: float = option(1.0, "sweep: off-target perplexity bound (1 = +100%)")
    attribution: Literal["gxa", "ig", "none"] = option(
        "gxa", "compare LAPE with neurons found by attribution (gxa or ig); none: skip"
    )
    attribution_lines: int = option(100, "attribution: lines per language it is computed on")
    contexts: int = option(20, "top contexts kept a neuron for the neuron browser (0: no browser)")
    batch_size: int = option(16, "rows per forward pass")
    max_length: int = option(256, "tokens per window")


def split_texts(texts: dict[str, list[str]], cfg: PipelineConfig) -> tuple[dict, dict]:
    need = cfg.record_lines + 4
    short = [lang for lang, lines in texts.items() if len(lines) < need]
    if short:
        raise NeuronlabError(f"languages {short} have fewer than {need} lines; give more text or lower record_lines")
    rec = {lang: lines[: cfg.record_lines] for lang, lines in texts.items()}
    held = {lang: lines[cfg.record_lines : cfg.record_lines + cfg.eval_lines] for lang, lines in texts.items()}
    return rec, held


def checks(ppl: dict, lss: dict, gen: dict) -> dict:
    """The paper's claims as numbers: own-language perplexity rise, LSS > 0.5, generation share up."""
    change = ppl["change"]
    own = {t: all(change[t][t] > v for lang, v in change[t].items() if lang != t) for t in change}
    return {
        "deactivation_hits_own_language": sum(own.values()) / len(own),
        "own_language_languages": [t for t, ok in own.items() if ok],
        "lss_above_half": sum(v > 0.5 for v in lss["off_diagonal"].values()) / len(lss["off_diagonal"]),
        "generation_share_up": sum(gen["steered"][t] > gen["baseline"][t] for t in gen["steered"])
        / len(gen["steered"]),
    }


class Phases:
    """Seconds spent in each phase of a run: `start(name, message)` logs the message and ends the phase before."""

    def __init__(self, log=print):
        self.log, self.seconds = log, {}
        self.began = self.since = time.monotonic()
        self.current: str | None = None

    def start(self, name: str | None, message: str | None = None) -> None:
        now = time.monotonic()
        if self.current is not None:
            self.seconds[self.current] = round(self.seconds.get(self.current, 0.0) + now - self.since, 1)
        self.current, self.since = name, now
        if message:
            self.log(f"[{now - self.began:7.1f}s] {message}")

    def table(self) -> str:
        self.start(None)
        total = sum(self.seconds.values())
        width = max(map(len, self.seconds), default=5)
        rows = [f"{name:<{width}}  {t:8.1f} s  {t / max(total, 1e-9):6.1%}" for name, t in self.seconds.items()]
        return "\n".join(["time per phase:", *rows, f"{'total':<{width}}  {total:8.1f} s"])


def run(
    model,
    tokenizer,
    texts: dict[str, list[str]],
    out: str | Path,
    config: PipelineConfig | None = None,
    title: str | None = None,  # default: "neuronlab: language-specific neurons of <model name>"
    progress: bool = True,
    log=print,
    **settings: Any,
) -> dict:
    """The language-neuron pipeline over `texts` ({language: lines}) with a PipelineConfig or its fields as
    keywords; writes results.json and the report into `out` and returns the results."""
    cfg = configured(PipelineConfig, config, settings, "run")
    out = Path(out)
    check_writable(out, folder=True)
    phases = Phases(log)
    rec, held = split_texts(texts, cfg)
    langs = list(texts)

    phases.start("record", "recording activation statistics")
    stats = record(
        model,
        tokenizer,
        rec,
        site="act",
        batch_size=cfg.batch_size,
        max_length=cfg.max_length,
        pooled_texts=cfg.pooled_texts,
        contexts=cfg.contexts > 0,
        top_k=cfg.contexts,
        progress=progress,
    )
    stats.save(out / "stats.safetensors")
    phases.start("select", "selecting neurons (LAPE and the language-activated baseline)")
    ns = lape(stats, top_rate=cfg.top_rate, filter_rate=cfg.filter_rate, activation_bar_ratio=cfg.activation_bar_ratio)
    ns.save(out / "neurons.json")
    activated(stats, cfg.pooled_texts).save(out / "activated.json")
    missing = [lang for lang in langs if ns.total(lang) == 0]
    targets = [lang for lang in langs if lang not in missing]
    if not targets:
        raise NeuronlabError("LAPE found no language-specific neurons: raise top_rate or give more text")

    phases.start("perplexity, deactivated", "perplexity with each language's neurons deactivated")
    zero = perplexity_matrix(
        model,
        tokenizer,
        held,
        targets,
        lambda t: steering_plan(ns, t, "zero"),
        cfg.batch_size,
        cfg.max_length,
        progress=progress,
    )
    amplify = lambda t: steering_plan(ns, t, cfg.amplify, stats=stats, n_texts=cfg.pooled_texts)  # noqa: E731
    amp = None
    if cfg.amplify_perplexity:
        phases.start("perplexity, amplified", f"perplexity with each language's neurons amplified ({cfg.amplify})")
        amp = perplexity_matrix(
            model, tokenizer, held, targets, amplify, cfg.batch_size, cfg.max_length, zero["baseline"], progress
        )
    items = lss_items_from_texts(held, cfg.lss_items)
    phases.start("LSS", f"language steering shift on {len(items)} items")
    plain_scores: dict = {}  # the plain model's LSS rows, scored once for LAPE's and the attribution neurons
    lss = lss_matrix(model, tokenizer, items, targets, amplify, cache=plain_scores, progress=progress)
    phases.start("generation", "generation shift")
    gen = generation_shift(
        model,
        tokenizer,
        prompts_from_texts(held, cfg.prompts),
        targets,
        amplify,
        cfg.max_new_tokens,
        progress=progress,
    )
    sweep = None
    if cfg.factors:
        phases.start("factor sweep", f"factor sweep {list(cfg.factors)}")
        sweep = factor_sweep(
            model,
            tokenizer,
            lambda t, f: steering_plan(ns, t, "scale", factor=f),
            cfg.factors,
            targets,
            {lang: lines[: cfg.sweep_lines] for lang, lines in held.items()},
            items[: cfg.sweep_items * len(langs)],
            cfg.max_ppl_increase,
            progress,
            zero["baseline"] if cfg.sweep_lines >= cfg.eval_lines else None,
            plain_scores,
            cfg.batch_size,
            cfg.max_length,
        )
    compared = None
    if cfg.attribution != "none":
        compared = compare_attribution(
            model,
            tokenizer,
            rec,
            held,
            items,
            stats,
            ns,
            targets,
            out,
            cfg,
            progress,
            zero["baseline"],
            plain_scores,
            phases,
        )
    results = {
        "config": cfg.to_dict(),
        "model": stats.meta["model"],
        "languages": langs,
        "targets": targets,
        "no_neurons": missing,
        "neurons": ns.counts(),
        "perplexity_deactivate": zero,
        "perplexity_amplify": amp,
        "lss": lss,
        "generation": gen,
        "sweep": sweep,
        "checks": checks(zero, lss, gen),
        "attribution": compared,
        "top_neurons": top_neurons(stats, ns),
    }
    if cfg.contexts:
        phases.start("neuron browser", "writing the neuron browser")
        write_browser(stats, ns, results, out / "view")
    log(phases.table())
    results["phases"] = phases.seconds
    results["seconds"] = round(sum(phases.seconds.values()), 1)
    write_json(out / "results.json", results)
    write_report(results, out / "report.html", title)
    log(f"wrote {out / 'report.html'}")
    return results


def run_demo(
    model,
    tokenizer,
    out: str | Path,
    config: PipelineConfig | None = None,
    data: str | Path | None = None,
    pattern: str = "*.txt",
    log=print,
    **settings: Any,
) -> dict:
    """results = run_demo(*nl.load_model(DEMO_MODEL), "out/")      # the embedded model and data, offline

    `run` on the GROUP files of the folder `data` that match `pattern` (without `data`: the embedded demo data,
    DEMO_DATA). `neuronlab demo` is this call."""
    texts = read_text_dir(DEMO_DATA, "*.txt") if data is None else read_text_dir(data, pattern)
    return run(model, tokenizer, texts, out, config, log=log, **settings)


def compare_attribution(
    model,
    tokenizer,
    rec: dict,
    held: dict,
    items: list,
    stats,
    ns: NeuronSet,
    targets: list,
    out: Path,
    cfg: PipelineConfig,
    progress: bool,
    baseline: dict,
    plain_scores: dict,
    phases: Phases,
) -> dict:
    """Attribution neurons, as many per language as LAPE found, evaluated as LAPE's are: their overlap with LAPE's
    (Jaccard), the perplexity matrix when they are zeroed, and LSS when they are amplified."""
    phases.start("attribution", f"attribution neurons ({cfg.attribution}, {cfg.attribution_lines} lines a language)")
    texts = {lang: lines[: cfg.attribution_lines] for lang, lines in rec.items()}
    attr = attribute(
        model,
        tokenizer,
        texts,
        method=cfg.attribution,
        batch_size=cfg.batch_size,
        max_length=cfg.max_length,
        progress=progress,
    )
    attr.save(out / "attribution.safetensors")
    found = attribution_neurons(attr, counts=ns)
    found.save(out / "attribution_neurons.json")
    overlap = {t: jaccard(ns.pairs(t), found.pairs(t)) for t in targets}
    phases.start("attribution: perplexity", "perplexity with each language's attribution neurons deactivated")
    zero = perplexity_matrix(
        model,
        tokenizer,
        held,
        targets,
        lambda t: steering_plan(found, t, "zero"),
        cfg.batch_size,
        cfg.max_length,
        baseline,
        progress,
    )
    amplify = lambda t: steering_plan(found, t, cfg.amplify, stats=stats, n_texts=cfg.pooled_texts)  # noqa: E731
    phases.start("attribution: LSS", "language steering shift with the attribution neurons amplified")
    lss = lss_matrix(
        model,
        tokenizer,
        items,
        [t for t in targets if found.total(t)],
        amplify,
        cache=plain_scores,
        progress=progress,
    )
    return {
        "method": cfg.attribution,
        "neurons": found.counts(),
        "jaccard": overlap,
        "perplexity_deactivate": zero,
        "lss": lss,
    }
