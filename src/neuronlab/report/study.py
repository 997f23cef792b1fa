"""The page of a paper's study (report.html) and the index of several (index.html), from computed results.

    write_study_report(out / "report.html", results, claims)   # results.json's dict, the study's Claim objects
    write_index(out / "index.html", {"arithmetic": ("arithmetic/report.html", results), ...})

For every claim: the claim in one sentence, what is measured, the rule that gives the verdict, the number with its
interval and the verdict for each model, and one figure with every model side by side. Every text is escaped.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from neuronlab.io import write_text
from neuronlab.report.html import Report

VERDICT_CLASS = {"holds": "ok", "does not hold": "bad"}


def number(value: Any, interval: list[float] | None = None) -> str:
    """0.463 [0.341, 0.57]: three significant digits (plain text; the pages and the Markdown use it)."""
    if value is None:
        return "n/a"
    text = f"{value:.3g}" if isinstance(value, float) else str(value)
    return text + (f" [{interval[0]:.3g}, {interval[1]:.3g}]" if interval else "")


def _number(value: Any, interval: list[float] | None) -> str:
    return escape(number(value, interval))


def _verdict(verdict: str) -> str:
    return f"<b class='{VERDICT_CLASS.get(verdict, '')}'>{escape(verdict)}</b>"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def verdict_table(claims: list[dict], models: list[str]) -> str:
    """Claims down, models across: the verdict and the number (HTML)."""
    rows = [
        [escape(c["claim"])]
        + [
            f"{_verdict(c['verdicts'].get(m, 'n/a'))}<br>{_number(c['values'].get(m), c['intervals'].get(m))}"
            for m in models
        ]
        for c in claims
    ]
    return _table(["claim", *models], rows)


def write_study_report(path: str | Path, results: dict, claims: list) -> None:
    models = list(results["models"])
    rep = Report(f"neuronlab study {results['study']}: {results['title']}")
    settings = {k: v for k, v in results["config"].items() if k not in ("config", "neuronlab")}
    rep.text(
        "Setup",
        f"<p>{escape(results['paper'])}. Models: {escape(', '.join(models))}; size <code>{escape(results['size'])}"
        f"</code>; neuronlab {escape(str(results['versions'].get('neuronlab')))}, torch "
        f"{escape(str(results['versions'].get('torch')))}, transformers "
        f"{escape(str(results['versions'].get('transformers')))}.</p>"
        + _table(["setting", "value"], [[escape(k), escape(str(v))] for k, v in settings.items()]),
    )
    phases = list(dict.fromkeys(p for r in results["models"].values() for p in r["seconds"]))
    rows = [[escape(p)] + [f"{results['models'][m]['seconds'].get(p, 0):.1f}" for m in models] for p in phases]
    rows.append(["<b>total</b>"] + [f"<b>{sum(results['models'][m]['seconds'].values()):.1f}</b>" for m in models])
    rep.text("Seconds per phase", _table(["phase", *models], rows))
    rep.text("Verdicts", verdict_table([c.to_dict() for c in claims], models))
    for c in claims:
        numbers = [
            [escape(m), _number(c.values.get(m), c.intervals.get(m)), _verdict(c.verdicts.get(m, "n/a"))]
            for m in models
        ]
        rep.text(
            c.claim,
            f"<p>Measured: {escape(c.measure)}.<br>Rule: {escape(c.rule)}</p>"
            + _table(["model", "value", "verdict"], numbers),
        )
        if c.figure:
            rep.figure(None, c.figure, c.measure)
    rep.save(path)


def write_index(path: str | Path, studies: dict[str, tuple[str, dict]]) -> None:
    """studies: name -> (link to its report, its results); one verdict table per study."""
    parts = []
    for name, (link, results) in studies.items():
        models = list(results["models"])
        seconds = {m: sum(r["seconds"].values()) for m, r in results["models"].items()}
        took = ", ".join(f"{escape(m)} {s / 60:.1f} min" for m, s in seconds.items())
        parts.append(
            f"<h2><a href='{escape(link)}'>{escape(name)}</a>: {escape(results['title'])}</h2>"
            f"<p>{escape(results['paper'])}; {took}</p>" + verdict_table(results["claims"], models)
        )
    rep = Report("neuronlab studies")
    rep.text(None, "".join(parts))
    write_text(path, rep.render())
