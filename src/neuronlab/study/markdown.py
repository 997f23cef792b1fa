"""A study's stored results as Markdown, and pages whose study sections are generated from stored results.

    text = markdown(read_json("runs/arith/results.json"))     # the command, minutes per model, figures, verdicts
    study_page("docs/real-models.md", "docs/results")         # rewrite every generated section of the page

A page marks a generated section with two comments; everything between them is rewritten from
`<results dir>/<study>.json` (a study's results.json), so every number in it is the stored one; the section named
`verdicts` gets one table of every stored study's verdicts (paper, claim, each model):

    <!-- study: arithmetic -->
    ...
    <!-- end study -->
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from neuronlab.errors import NeuronlabError
from neuronlab.io import read_json, write_text
from neuronlab.report.study import number
from neuronlab.study.base import STUDIES

SECTION = re.compile(r"(<!-- study: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end study -->)", re.S)


def command(results: dict[str, Any]) -> str:
    """The command that runs this study again: its models, size, dtype and every setting that differs from the
    size's preset (as --set)."""
    kind = STUDIES[results["study"]]
    preset = json.loads(json.dumps(kind.settings(results["size"]).to_dict()))  # tuples as the stored lists
    parts = [f"neuronlab study {results['study']}"]
    parts += [f"--model {m}" for m in results["models"]]
    parts += [f"--out runs/{results['study']}", f"--size {results['size']}"]
    if results["dtype"] != "checkpoint":
        parts.append(f"--dtype {results['dtype']}")
    for key, value in results["config"].items():
        if key != "neuronlab" and preset.get(key) != value:
            text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            parts.append(f"--set {key}={text}")
    return " \\\n    ".join(parts)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def table(headers: list[str], rows: list[list[str]]) -> str:
    return "\n".join([_row(headers), _row(["---"] * len(headers)), *(_row(r) for r in rows)])


def markdown(results: dict[str, Any]) -> str:
    """The study as Markdown (results.json's dict, claims computed): the command, the minutes each model took, the
    study's key figures and the verdict table (claim, rule, each model's number and verdict)."""
    kind = STUDIES[results["study"]]
    models = list(results["models"])
    cfg = kind.config.from_dict(results["config"])
    versions = results["versions"]
    minutes = [f"{m} {sum(r['seconds'].values()) / 60:.1f} min ({r['dtype']})" for m, r in results["models"].items()]
    summary = kind.summary({m: r["figures"] for m, r in results["models"].items()}, cfg)
    parts = [
        f"```bash\n{command(results)}\n```",
        f"Size `{results['size']}`; on 2 CPU cores: {', '.join(minutes)}; neuronlab {versions['neuronlab']}, torch "
        f"{versions['torch']}, transformers {versions['transformers']}.",
    ]
    if summary:
        parts.append(table(["measured", *models], [[k, *(v.get(m, "") for m in models)] for k, v in summary.items()]))
    rows = [
        [f"{c['claim']} ({c['rule']})"]
        + [f"**{c['verdicts'][m]}**: {number(c['values'].get(m), c['intervals'].get(m))}" for m in models]
        for c in results["claims"]
    ]
    parts.append(table(["claim (verdict rule)", *models], rows))
    return "\n\n".join(parts) + "\n"


def verdicts(studies: dict[str, dict[str, Any]]) -> str:
    """One table of several studies' verdicts ({study: results}): paper and claim down, models across."""
    models = list(dict.fromkeys(m for r in studies.values() for m in r["models"]))
    rows = [
        [re.sub(r",? arXiv [\d.]+", "", r["paper"]) if i == 0 else "", c["claim"]]
        + [
            f"{c['verdicts'][m]} ({number(c['values'].get(m), c['intervals'].get(m))})" if m in c["verdicts"] else ""
            for m in models
        ]
        for r in studies.values()
        for i, c in enumerate(r["claims"])
    ]
    return table(["paper", "claim", *models], rows)


def page_text(page: str | Path, results_dir: str | Path) -> tuple[str, str]:
    """(the page as it is, the page with each generated section rewritten from `results_dir/<study>.json`)."""
    page, results_dir = Path(page), Path(results_dir)
    if not page.is_file():
        raise NeuronlabError(f"no page at {page}")

    def section(match: re.Match) -> str:
        if match["name"] == "verdicts":
            stored = {p.stem: read_json(p, "study results") for p in sorted(results_dir.glob("*.json"))}
            body = verdicts({name: stored[name] for name in STUDIES if name in stored}) + "\n"
        else:
            body = markdown(read_json(results_dir / f"{match['name']}.json", "study results"))
        return match[1] + "\n" + body + "\n" + match[4]

    text = page.read_text(encoding="utf-8")
    if not SECTION.search(text):
        raise NeuronlabError(f"{page} has no '<!-- study: NAME -->' ... '<!-- end study -->' section")
    return text, SECTION.sub(section, text)


def study_page(page: str | Path, results_dir: str | Path, check: bool = False) -> bool:
    """Rewrite the page's generated sections (module doc) from the stored results; True when that changed it.
    `check`: change nothing and fail, naming the sections, where a section is not what its results give."""
    old, new = page_text(page, results_dir)
    if check and old != new:
        differ = [a["name"] for a, b in zip(SECTION.finditer(old), SECTION.finditer(new), strict=True) if a[0] != b[0]]
        raise NeuronlabError(
            f"{page}: the sections {', '.join(differ)} differ from {results_dir}: run `neuronlab study page {page} "
            f"--results {results_dir}`"
        )
    if old != new:
        write_text(page, new)
    return old != new
