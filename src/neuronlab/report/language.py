"""The HTML report of the language-neuron pipeline (`neuronlab demo`), rendered from its results.json alone, so
`neuronlab report` needs neither the model nor the demo.

    write_report(read_results("demo-out/results.json"), Path("demo-out/report.html"))
    report_from_results("demo-out/results.json")           # the same, what `neuronlab report` calls
    view_from_files("s.safetensors", "view/", results="demo-out/results.json")   # the neuron browser: `view`
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from neuronlab.errors import NeuronlabError
from neuronlab.io import check_writable, read_json
from neuronlab.models.naming import model_name
from neuronlab.record.stats import Stats
from neuronlab.report import plots
from neuronlab.report.html import Link, Report
from neuronlab.report.viewer import neuron_id, write_view
from neuronlab.select.experts import Expertise
from neuronlab.select.neuron_set import NeuronSet


def write_report(results: dict, path: Path, title: str | None = None) -> None:
    """write_report(read_results("out/results.json"), Path("out/report.html"))  # "... neurons of gemma-3-270m"

    `title` defaults to one naming the model by `model_name` (its name or hub id, never a local path); every text
    of the corpus or the run (languages, generations) is escaped."""
    cfg, langs, targets, c = results["config"], results["languages"], results["targets"], results["checks"]
    model = results["model"]
    report = Report(title or f"neuronlab: language-specific neurons of {model_name(model, 'an in-memory model')}")
    report.text(
        "Setup",
        (
            f"<p>Model <code>{escape(model_name(model, 'in-memory'))}</code> "
            f"({escape(str(model['model_type']))}, {model['n_layers']} "
            f"layers x {model['d_ff']} FFN neurons). Languages: {escape(', '.join(langs))}. "
            f"Statistics on {cfg['record_lines']} "
            f"lines a language; evaluation on the next {cfg['eval_lines']} (held out).</p>"
            f"<p>LAPE with top_rate={cfg['top_rate']}, filter_rate={cfg['filter_rate']}, "
            f"activation_bar_ratio={cfg['activation_bar_ratio']}. Tang et al.'s 1% suits 7B models with about 350k FFN "
            "neurons; a tiny model has a few thousand, so 1% leaves a handful per language, too few to move its "
            f"behaviour: this run keeps {cfg['top_rate']:.0%}. Amplification sets each neuron to its "
            f"{escape(str(cfg['amplify']))} (p_max: the max over texts of its per-text mean activation).</p>"
            f"<p>Run time {results['seconds']} s"
            + (
                " (" + ", ".join(f"{k} {v} s" for k, v in results["phases"].items()) + ")"
                if results.get("phases")
                else ""
            )
            + ". Artifacts beside this file: <code>stats.safetensors</code>, "
            "<code>neurons.json</code>, <code>activated.json</code>, <code>results.json</code>.</p>"
        ),
    )
    status = lambda ok: "ok" if ok else "bad"  # noqa: E731
    report.text(
        "What it shows",
        (
            f"<ul><li class='{status(c['deactivation_hits_own_language'] >= 0.8)}'>Deactivating L's neurons raises L's "
            f"perplexity more than any other language's for "
            f"{c['deactivation_hits_own_language']:.0%} of languages.</li>"
            f"<li class='{status(c['lss_above_half'] == 1)}'>Mean off-diagonal LSS above 0.5 for "
            f"{c['lss_above_half']:.0%} of target languages.</li>"
            f"<li class='{status(c['generation_share_up'] == 1)}'>"
            "Share of generations identified as the target language "
            f"rises for {c['generation_share_up']:.0%} of targets.</li></ul>"
            + (
                f"<p>No neurons found for: {escape(', '.join(results['no_neurons']))}.</p>"
                if results["no_neurons"]
                else ""
            )
        ),
    )
    report.figure(
        "Neurons per layer",
        plots.neurons_per_layer(
            {g: {int(k): v for k, v in per.items()} for g, per in results["neurons"].items()},
            model["n_layers"],
            "LAPE neurons per layer and language",
        ),
    )
    if results.get("top_neurons"):
        browse = cfg.get("contexts", 0) > 0
        name = lambda r: neuron_id(r["layer"], r["neuron"])  # noqa: E731
        report.table(
            "Each language's most specific LAPE neurons",
            [
                {
                    "language": r["language"],
                    "neuron": Link(name(r), f"view/index.html#{name(r)}") if browse else name(r),
                    "LAPE entropy": r["entropy"],
                    "P(active) in the language": r["p_language"],
                    "highest P(active) elsewhere": r["p_other_max"],
                }
                for r in results["top_neurons"]
            ],
            "The five of lowest entropy a language."
            + (
                " Each links to its page in the neuron browser "
                "(view/index.html: top contexts, activation probability per language, what zeroing the set did)."
                if browse
                else ""
            ),
        )
    zero = results["perplexity_deactivate"]
    report.figure(
        "Perplexity change when a language's neurons are deactivated",
        plots.heatmap(
            zero["change"], targets, langs, "relative perplexity change", "evaluated language", "deactivated neurons of"
        ),
        "Row T, column L: perplexity on L with T's neurons set to 0, divided by the plain perplexity, minus 1.",
    )
    report.table(None, [{"language": lang, "plain perplexity": zero["baseline"][lang]} for lang in langs])
    amp = results["perplexity_amplify"]
    if amp is not None:
        report.figure(
            f"Perplexity change when a language's neurons are amplified ({cfg['amplify']})",
            plots.heatmap(
                amp["change"],
                targets,
                langs,
                "relative perplexity change",
                "evaluated language",
                "amplified neurons of",
            ),
        )
    lss = results["lss"]
    report.figure(
        "Language Steering Shift",
        plots.heatmap(
            lss["matrix"],
            lss["langs"],
            targets,
            "LSS (share of items pushed toward T)",
            "target T",
            "prompt language L",
            center=0.5,
        ),
        "Share of items in L whose log P(object in T) - log P(object in L) rises under T's amplification.",
    )
    gen = results["generation"]
    report.table(
        "Generation shift",
        [
            {
                "target": t,
                "identified as target, plain": gen["baseline"][t],
                "with amplification": gen["steered"][t],
                "mean off-diagonal LSS": lss["off_diagonal"][t],
            }
            for t in targets
        ],
        "Greedy generations from prompts in the other languages, labelled by py3langid (offline).",
    )
    report.table("Sample generations", gen["samples"])
    sweep = results["sweep"]
    if sweep is not None:
        report.figure("Factor sweep (scale the target's neurons)", plots.sweep(sweep["rows"], targets, "scale factor"))
        report.table(
            None,
            [{"target": t, "best factor": f} for t, f in sweep["best"].items()],
            f"Per target, the factor with the highest LSS whose mean off-target perplexity rises by at most "
            f"{sweep['max_ppl_increase']:.0%}.",
        )
    if results.get("attribution"):
        _attribution_section(report, results)
    report.save(path)


_METHOD = {"gxa": "gradient x activation", "ig": "integrated gradients"}


def _attribution_section(report: Report, results: dict) -> None:
    """LAPE's neurons against attribution neurons of the same count per language, side by side."""
    a, langs = results["attribution"], results["languages"]
    lape_zero, attr_zero = results["perplexity_deactivate"]["change"], a["perplexity_deactivate"]["change"]
    lape_lss, attr_lss = results["lss"]["off_diagonal"], a["lss"]["off_diagonal"]
    own = lambda ch, t: ch[t][t]  # noqa: E731
    off = lambda ch, t: sum(v for lang, v in ch[t].items() if lang != t) / max(1, len(ch[t]) - 1)  # noqa: E731
    rows = [
        {
            "language": t,
            "neurons": sum(a["neurons"].get(t, {}).values()),
            "Jaccard": a["jaccard"][t],
            "own ppl change, LAPE": own(lape_zero, t),
            "own ppl change, attribution": own(attr_zero, t),
            "mean other ppl change, LAPE": off(lape_zero, t),
            "mean other ppl change, attribution": off(attr_zero, t),
            "LSS, LAPE": lape_lss.get(t),
            "LSS, attribution": attr_lss.get(t),
        }
        for t in results["targets"]
    ]
    hits = lambda ch: sum(all(ch[t][t] > v for lang, v in ch[t].items() if lang != t) for t in ch) / len(ch)  # noqa: E731
    report.table(
        f"LAPE neurons against attribution neurons ({a['method']})",
        rows,
        (
            f"Attribution: per language, each neuron's {_METHOD.get(a['method'], a['method'])} for the language's "
            "log-likelihood (summed over its first lines, per token), "
            "minus its highest score for another language; the "
            "top neurons, as many "
            "as LAPE kept for the language. Zeroing hits the own language most for "
            f"{hits(lape_zero):.0%} of languages with LAPE's neurons and {hits(attr_zero):.0%} with attribution's."
        ),
    )
    report.figure(
        "Perplexity change when a language's attribution neurons are deactivated",
        plots.heatmap(
            attr_zero,
            list(attr_zero),
            langs,
            "relative perplexity change",
            "evaluated language",
            "deactivated attribution neurons of",
        ),
    )


def read_results(path: str | Path) -> dict:
    """The results.json of a pipeline run; a clear error for a file that is not one."""
    data = read_json(path, "results")
    need = ("config", "model", "languages", "targets", "checks", "perplexity_deactivate", "lss", "generation")
    if any(k not in data for k in need):
        raise NeuronlabError(f"{path} is not the results.json of `neuronlab demo` (it lacks {', '.join(need)})")
    return data


def report_from_results(results: str | Path, out: str | Path | None = None) -> Path:
    """path = report_from_results("out/results.json")        # out/report.html again, from the results alone

    The HTML report of a pipeline run written again from its results.json, to `out` (default: report.html beside
    the results); returns the path written. `neuronlab report` is this call."""
    target = Path(out) if out is not None else Path(results).with_name("report.html")
    check_writable(target)
    write_report(read_results(results), target)
    return target


def view_from_files(
    stats: str | Path,
    out: str | Path,
    neurons: str | Path | None = None,
    expertise: str | Path | None = None,
    results: str | Path | None = None,
    limit: int = 500,
) -> Path:
    """path = view_from_files("s.safetensors", "view/", neurons="n.json", results="demo-out/results.json")

    `write_view` on files: stats recorded with contexts, a neuron set (.json), an expertise (.safetensors) and a
    pipeline's results.json (what zeroing each language's neurons did to perplexity); returns out/index.html.
    `neuronlab view` is this call."""
    effects = None if results is None else read_results(results)["perplexity_deactivate"]["change"]
    return write_view(
        Stats.load(stats),
        out,
        None if neurons is None else NeuronSet.load(neurons),
        None if expertise is None else Expertise.load(expertise),
        effects,
        limit,
    )
