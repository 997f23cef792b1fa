"""The language study's run on one model (`study/language.py` tests the claims): the demo's pipeline, with its
settings (`LanguageStudyConfig`), on FLORES-format text: record, LAPE, the perplexity matrix with each language's
neurons zeroed, LSS and generations with them at p_max, the same for as many attribution neurons, the neuron
browser, and the pipeline's results.json and report.html in the model's folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from neuronlab.analyze.alignment import jaccard
from neuronlab.config import Config, option
from neuronlab.data.corpora import read_text_dir
from neuronlab.data.tasks import lss_items_from_texts, prompts_from_texts
from neuronlab.errors import NeuronlabError
from neuronlab.evaluate.steering import generation_shift, lss_matrix, perplexity_matrix
from neuronlab.intervene.steer import VARIANTS, steering_plan
from neuronlab.io import write_json
from neuronlab.models.load import model_info
from neuronlab.record.recorder import record
from neuronlab.report.browser import top_neurons, write_browser
from neuronlab.report.language import write_report
from neuronlab.select.attribution import attribute, attribution_neurons
from neuronlab.select.lape import lape
from neuronlab.study.base import Phases


@dataclass(frozen=True)
class LanguageStudyConfig(Config):
    data: str = option("../shared/data/flores200_devtest", "folder of one text file a language (FLORES-200 format)")
    pattern: str = option("*.devtest", "files of the folder to read; the language is the name before the first dot")
    languages: tuple[str, ...] = option((), "languages to keep (default: every file)")
    skip_lines: int = option(0, "lines skipped at the top of every file (those a model was trained on)")
    record_lines: int = option(100, "lines a language for the statistics")
    eval_lines: int = option(10, "held-out lines a language for perplexity, LSS items and prompts")
    top_rate: float = option(0.01, "LAPE: share of all neurons kept")
    filter_rate: float = option(0.95, "LAPE: activation-probability filter quantile")
    activation_bar_ratio: float = option(0.95, "LAPE: quantile to assign a language")
    pooled_texts: int = option(100, "texts a language for p_max (the value amplification sets)")
    amplify: str = option("p_max", "steering variant for LSS and generation")
    lss_items: int = option(8, "LSS items a language")
    prompts: int = option(3, "generation prompts a language")
    max_new_tokens: int = option(16, "tokens generated a prompt")
    attribution: Literal["gxa", "ig", "none"] = option("gxa", "neurons found by attribution to compare (none: skip)")
    attribution_lines: int = option(20, "attribution: lines a language it is computed on")
    contexts: int = option(20, "top contexts kept a neuron for the neuron browser (0: no browser)")
    batch_size: int = option(16, "rows a forward pass")
    max_length: int = option(256, "tokens a window")

    def check(self) -> None:
        if self.record_lines < 1 or self.eval_lines < 1 or self.lss_items < 1 or self.prompts < 1:
            raise NeuronlabError("record_lines, eval_lines, lss_items and prompts must be at least 1")
        if not 0 < self.top_rate <= 1 or self.skip_lines < 0:
            raise NeuronlabError("top_rate must be in (0, 1] and skip_lines at least 0")
        VARIANTS[self.amplify]  # an unknown steering variant: one error listing them


def read_languages(cfg: LanguageStudyConfig) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """({language: the record lines}, {language: the held-out lines}) of the config's folder."""
    if not Path(cfg.data).is_dir():
        raise NeuronlabError(
            f"no folder {cfg.data}: give FLORES-200 devtest files (--set data=FOLDER), or any folder of LANG.txt files "
            "(--set data=FOLDER --set pattern='*.txt'), such as the embedded demo data, src/neuronlab/demo/data"
        )
    texts = read_text_dir(cfg.data, cfg.pattern, start=cfg.skip_lines)
    missing = [lang for lang in cfg.languages if lang not in texts]
    if missing:
        raise NeuronlabError(f"no files for {missing} in {cfg.data}: it has {', '.join(texts)}")
    texts = {lang: texts[lang] for lang in cfg.languages} if cfg.languages else texts
    short = [lang for lang, lines in texts.items() if len(lines) < cfg.record_lines + cfg.eval_lines]
    if len(texts) < 2 or short:
        raise NeuronlabError(f"need 2 languages or more, each with record_lines + eval_lines lines (short: {short})")
    rec = {lang: lines[: cfg.record_lines] for lang, lines in texts.items()}
    return rec, {lang: lines[cfg.record_lines : cfg.record_lines + cfg.eval_lines] for lang, lines in texts.items()}


def own_language_hit(change: dict[str, dict[str, float]]) -> list[str]:
    """The targets whose zeroed neurons raise the target's own perplexity more than any other language's."""
    return [t for t, ch in change.items() if all(ch[t] > v for lang, v in ch.items() if lang != t)]


def own_language_hits(change: dict[str, dict[str, float]]) -> float:
    """Share of targets whose zeroed neurons raise the target's own perplexity more than any other language's."""
    return len(own_language_hit(change)) / len(change)


def _effects(model, tok, ns, stats, texts: tuple[dict, list], targets, cfg, cache, phases, who="", baseline=None):
    """(the perplexity matrix with each target's neurons of `ns` zeroed, LSS with them amplified, the amplifying
    plan of a target)."""
    held, items = texts
    with phases(f"{who}perplexity, deactivated"):
        zero = lambda t: steering_plan(ns, t, "zero")  # noqa: E731
        ppl = perplexity_matrix(model, tok, held, targets, zero, cfg.batch_size, cfg.max_length, baseline)
    with phases(f"{who}LSS"):
        amplify = lambda t: steering_plan(ns, t, cfg.amplify, stats=stats, n_texts=cfg.pooled_texts)  # noqa: E731
        lss = lss_matrix(model, tok, items, [t for t in targets if ns.total(t)], amplify, cache=cache)
    return ppl, lss, amplify


def pipeline(model, tok, cfg: LanguageStudyConfig, out: Path, phases: Phases) -> dict[str, Any]:
    """The pipeline's run (module doc) into `out`; returns what its results.json holds (the demo's format)."""
    rec, held = read_languages(cfg)
    batching: dict[str, Any] = dict(batch_size=cfg.batch_size, max_length=cfg.max_length)
    langs = list(rec)
    out.mkdir(parents=True, exist_ok=True)
    with phases("record"):
        stats = record(
            model,
            tok,
            rec,
            site="act",
            pooled_texts=cfg.pooled_texts,
            contexts=cfg.contexts > 0,
            top_k=cfg.contexts,
            **batching,
        )
        stats.save(out / "stats.safetensors")
    with phases("select"):
        ns = lape(
            stats, top_rate=cfg.top_rate, filter_rate=cfg.filter_rate, activation_bar_ratio=cfg.activation_bar_ratio
        )
        ns.save(out / "neurons.json")
    targets = [lang for lang in langs if ns.total(lang)]
    if not targets:
        raise NeuronlabError("LAPE found no language-specific neurons: raise top_rate or give more text")
    texts = (held, lss_items_from_texts(held, cfg.lss_items))
    cache: dict[Any, Any] = {}  # the plain model's LSS rows, scored once for both neuron sets
    ppl, lss, amplify = _effects(model, tok, ns, stats, texts, targets, cfg, cache, phases)
    with phases("generation"):
        gen = generation_shift(model, tok, prompts_from_texts(held, cfg.prompts), targets, amplify, cfg.max_new_tokens)
    compared = None
    if cfg.attribution != "none":  # as many neurons a language as LAPE found, evaluated as LAPE's are
        with phases("attribution"):
            lines = {lang: lines[: cfg.attribution_lines] for lang, lines in rec.items()}
            found = attribution_neurons(attribute(model, tok, lines, method=cfg.attribution, **batching), counts=ns)
            found.save(out / "attribution_neurons.json")
        z, a, _ = _effects(
            model, tok, found, stats, texts, targets, cfg, cache, phases, "attribution: ", ppl["baseline"]
        )
        overlap = {t: jaccard(ns.pairs(t), found.pairs(t)) for t in targets}
        compared = dict(method=cfg.attribution, neurons=found.counts(), jaccard=overlap, perplexity_deactivate=z, lss=a)
    checks = {
        "deactivation_hits_own_language": own_language_hits(ppl["change"]),
        "lss_above_half": sum(v > 0.5 for v in lss["off_diagonal"].values()) / len(targets),
        "generation_share_up": sum(gen["steered"][t] > gen["baseline"][t] for t in targets) / len(targets),
    }
    results = {
        "config": cfg.to_dict(),
        "model": model_info(model),
        "languages": langs,
        "targets": targets,
        "no_neurons": [lang for lang in langs if lang not in targets],
        "neurons": ns.counts(),
        "perplexity_deactivate": ppl,
        "perplexity_amplify": None,
        "lss": lss,
        "generation": gen,
        "sweep": None,
        "checks": checks,
        "attribution": compared,
        "top_neurons": top_neurons(stats, ns),
    }
    if cfg.contexts:
        with phases("neuron browser"):
            write_browser(stats, ns, results, out / "view")
    results["phases"] = dict(phases.seconds)
    results["seconds"] = round(sum(phases.seconds.values()), 1)
    write_json(out / "results.json", results)
    write_report(results, out / "report.html")
    return results
