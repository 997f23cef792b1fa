"""The language-neuron pipeline behind `neuronlab demo`: record -> LAPE -> deactivate / amplify -> perplexity
matrix, LSS matrix, generation shift, factor sweep -> report.html, with every artifact saved beside it.

    >>> model, tok = nl.load_model(DEMO_MODEL)
    >>> results = run(model, tok, read_text_dir(DEMO_DATA), "out/", PipelineConfig())

Texts of each language are split by line: the first `record_lines` feed the statistics, the next
`eval_lines` are held out for perplexity, LSS items and generation prompts.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from neuronlab.data.tasks import lss_items_from_texts, prompts_from_texts
from neuronlab.errors import NeuronlabError
from neuronlab.evaluate.steering import factor_sweep, generation_shift, lss_matrix, perplexity_matrix
from neuronlab.intervene.steer import steering_plan
from neuronlab.io import write_json
from neuronlab.record.recorder import record
from neuronlab.report import plots
from neuronlab.report.html import Report
from neuronlab.select.lape import activated, lape

DEMO_DIR = Path(__file__).parent
DEMO_MODEL = DEMO_DIR / "model"
DEMO_DATA = DEMO_DIR / "data"


@dataclass(frozen=True)
class PipelineConfig:
    record_lines: int = field(default=250, metadata={"help": "lines per language for the statistics"})
    eval_lines: int = field(default=100, metadata={"help": "held-out lines per language for evaluation"})
    top_rate: float = field(default=0.15, metadata={"help": "LAPE: share of all neurons kept"})
    filter_rate: float = field(default=0.95, metadata={"help": "LAPE: activation-probability filter quantile"})
    activation_bar_ratio: float = field(default=0.95, metadata={"help": "LAPE: quantile to assign a language"})
    pooled_texts: int = field(default=100, metadata={"help": "texts per language for p_max / p_median"})
    amplify: str = field(default="p_max", metadata={"help": "steering variant for LSS and generation"})
    lss_items: int = field(default=50, metadata={"help": "LSS items per language"})
    prompts: int = field(default=10, metadata={"help": "generation prompts per language"})
    max_new_tokens: int = field(default=24, metadata={"help": "tokens generated per prompt"})
    amplify_perplexity: bool = field(default=True, metadata={"help": "also the perplexity matrix under amplification"})
    factors: tuple[float, ...] = field(default=(2.0, 4.0, 8.0), metadata={"help": "sweep: scale factors (none: no sweep)"})
    sweep_lines: int = field(default=40, metadata={"help": "sweep: held-out lines per language for perplexity"})
    sweep_items: int = field(default=20, metadata={"help": "sweep: LSS items per language"})
    max_ppl_increase: float = field(default=1.0, metadata={"help": "sweep: off-target perplexity bound (1 = +100%)"})
    batch_size: int = field(default=16, metadata={"help": "rows per forward pass"})
    max_length: int = field(default=256, metadata={"help": "tokens per window"})


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
        "generation_share_up": sum(gen["steered"][t] > gen["baseline"][t] for t in gen["steered"]) / len(gen["steered"]),
    }


def run(model, tokenizer, texts: dict[str, list[str]], out: str | Path, cfg: PipelineConfig = PipelineConfig(),
        title: str = "neuronlab: language-specific neurons", progress: bool = True, log=print) -> dict:  # fmt: skip
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    rec, held = split_texts(texts, cfg)
    langs = list(texts)
    step = lambda msg: log(f"[{time.monotonic() - start:6.1f}s] {msg}")  # noqa: E731

    step("recording activation statistics")
    stats = record(model, tokenizer, rec, site="act", batch_size=cfg.batch_size, max_length=cfg.max_length,
                   pooled_texts=cfg.pooled_texts, progress=progress)  # fmt: skip
    stats.save(out / "stats.safetensors")
    step("selecting neurons (LAPE and the language-activated baseline)")
    ns = lape(stats, cfg.top_rate, cfg.filter_rate, cfg.activation_bar_ratio)
    ns.save(out / "neurons.json")
    activated(stats, cfg.pooled_texts).save(out / "activated.json")
    missing = [lang for lang in langs if ns.total(lang) == 0]
    targets = [lang for lang in langs if lang not in missing]
    if not targets:
        raise NeuronlabError("LAPE found no language-specific neurons: raise top_rate or give more text")

    step("perplexity with each language's neurons deactivated")
    zero = perplexity_matrix(model, tokenizer, held, targets, lambda t: steering_plan(ns, t, "zero"),
                             cfg.batch_size, cfg.max_length)  # fmt: skip
    amplify = lambda t: steering_plan(ns, t, cfg.amplify, stats=stats, n_texts=cfg.pooled_texts)  # noqa: E731
    amp = None
    if cfg.amplify_perplexity:
        step(f"perplexity with each language's neurons amplified ({cfg.amplify})")
        amp = perplexity_matrix(model, tokenizer, held, targets, amplify, cfg.batch_size, cfg.max_length)
    items = lss_items_from_texts(held, cfg.lss_items)
    step(f"language steering shift on {len(items)} items")
    lss = lss_matrix(model, tokenizer, items, targets, amplify)
    step("generation shift")
    gen = generation_shift(model, tokenizer, prompts_from_texts(held, cfg.prompts), targets, amplify,
                           cfg.max_new_tokens)  # fmt: skip
    sweep = None
    if cfg.factors:
        step(f"factor sweep {list(cfg.factors)}")
        sweep = factor_sweep(model, tokenizer, lambda t, f: steering_plan(ns, t, "scale", factor=f), cfg.factors,
                             targets, {lang: lines[: cfg.sweep_lines] for lang, lines in held.items()},
                             items[: cfg.sweep_items * len(langs)], cfg.max_ppl_increase)  # fmt: skip
    results = {
        "config": asdict(cfg), "model": stats.meta["model"], "languages": langs, "targets": targets,
        "no_neurons": missing, "neurons": ns.counts(), "perplexity_deactivate": zero, "perplexity_amplify": amp,
        "lss": lss, "generation": gen, "sweep": sweep, "checks": checks(zero, lss, gen),
        "seconds": round(time.monotonic() - start, 1),
    }  # fmt: skip
    write_json(out / "results.json", results)
    write_report(results, out / "report.html", title)
    step(f"wrote {out / 'report.html'}")
    return results


def write_report(results: dict, path: Path, title: str = "neuronlab: language-specific neurons") -> None:
    cfg, langs, targets, c = results["config"], results["languages"], results["targets"], results["checks"]
    report = Report(title)
    model = results["model"]
    report.text("Setup", (
        f"<p>Model <code>{model.get('name_or_path') or 'in-memory'}</code> ({model['model_type']}, {model['n_layers']} "
        f"layers x {model['d_ff']} FFN neurons). Languages: {', '.join(langs)}. Statistics on {cfg['record_lines']} "
        f"lines a language; evaluation on the next {cfg['eval_lines']} (held out).</p>"
        f"<p>LAPE with top_rate={cfg['top_rate']}, filter_rate={cfg['filter_rate']}, "
        f"activation_bar_ratio={cfg['activation_bar_ratio']}. Tang et al.'s 1% suits 7B models with about 350k FFN "
        "neurons; a tiny model has a few thousand, so 1% leaves a handful per language, too few to move its "
        f"behaviour: this run keeps {cfg['top_rate']:.0%}. Amplification sets each neuron to its "
        f"{cfg['amplify']} (p_max: the max over texts of its per-text mean activation).</p>"
        f"<p>Run time {results['seconds']} s. Artifacts beside this file: <code>stats.safetensors</code>, "
        "<code>neurons.json</code>, <code>activated.json</code>, <code>results.json</code>.</p>"))  # fmt: skip
    status = lambda ok: "ok" if ok else "bad"  # noqa: E731
    report.text("What it shows", (
        f"<ul><li class='{status(c['deactivation_hits_own_language'] >= 0.8)}'>Deactivating L's neurons raises L's "
        f"perplexity more than any other language's for {c['deactivation_hits_own_language']:.0%} of languages.</li>"
        f"<li class='{status(c['lss_above_half'] == 1)}'>Mean off-diagonal LSS above 0.5 for "
        f"{c['lss_above_half']:.0%} of target languages.</li>"
        f"<li class='{status(c['generation_share_up'] == 1)}'>Share of generations identified as the target language "
        f"rises for {c['generation_share_up']:.0%} of targets.</li></ul>"
        + (f"<p>No neurons found for: {', '.join(results['no_neurons'])}.</p>" if results["no_neurons"] else "")))  # fmt: skip
    report.figure("Neurons per layer", plots.neurons_per_layer(
        {g: {int(k): v for k, v in per.items()} for g, per in results["neurons"].items()}, model["n_layers"],
        "LAPE neurons per layer and language"))  # fmt: skip
    zero = results["perplexity_deactivate"]
    report.figure("Perplexity change when a language's neurons are deactivated", plots.heatmap(
        zero["change"], targets, langs, "relative perplexity change", "evaluated language", "deactivated neurons of"),
        "Row T, column L: perplexity on L with T's neurons set to 0, divided by the plain perplexity, minus 1.")  # fmt: skip
    report.table(None, [{"language": lang, "plain perplexity": zero["baseline"][lang]} for lang in langs])
    amp = results["perplexity_amplify"]
    if amp is not None:
        report.figure(f"Perplexity change when a language's neurons are amplified ({cfg['amplify']})", plots.heatmap(
            amp["change"], targets, langs, "relative perplexity change", "evaluated language", "amplified neurons of"))  # fmt: skip
    lss = results["lss"]
    report.figure("Language Steering Shift", plots.heatmap(
        lss["matrix"], lss["langs"], targets, "LSS (share of items pushed toward T)", "target T", "prompt language L",
        center=0.5),
        "Share of items in L whose log P(object in T) - log P(object in L) rises under T's amplification.")  # fmt: skip
    gen = results["generation"]
    report.table("Generation shift", [
        {"target": t, "identified as target, plain": gen["baseline"][t], "with amplification": gen["steered"][t],
         "mean off-diagonal LSS": lss["off_diagonal"][t]} for t in targets],
        "Greedy generations from prompts in the other languages, labelled by py3langid (offline).")  # fmt: skip
    report.table("Sample generations", gen["samples"])
    sweep = results["sweep"]
    if sweep is not None:
        report.figure("Factor sweep (scale the target's neurons)", plots.sweep(sweep["rows"], targets, "scale factor"))
        report.table(None, [{"target": t, "best factor": f} for t, f in sweep["best"].items()],
                     f"Per target, the factor with the highest LSS whose mean off-target perplexity rises by at most "
                     f"{sweep['max_ppl_increase']:.0%}.")  # fmt: skip
    report.save(path)


def read_results(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))
