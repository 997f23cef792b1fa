"""One self-contained HTML report: sections of text, tables and PNG figures embedded as data URIs.

report = Report("neuronlab demo")
report.text("Setup", "<p>...</p>"); report.figure("Perplexity", png_bytes); report.table("Shift", rows)
report.save("out/report.html")
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

from neuronlab.io import write_text

STYLE = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left}
img{max-width:100%}.ok{color:#080}.bad{color:#b00}code{background:#f4f4f4;padding:0 .2em}"""


@dataclass(frozen=True)
class Link:
    """A table cell that links somewhere (e.g. a neuron's page in the browser)."""

    text: str
    href: str


class Report:
    def __init__(self, title: str):
        self.title = title
        self.parts: list[str] = []

    def text(self, heading: str | None, body_html: str) -> None:
        self.parts.append((f"<h2>{html.escape(heading)}</h2>" if heading else "") + body_html)

    def figure(self, heading: str | None, png: bytes, caption: str = "") -> None:
        data = base64.b64encode(png).decode("ascii")
        cap = f"<p>{html.escape(caption)}</p>" if caption else ""
        self.text(heading, f'<img alt="{html.escape(heading or caption)}" src="data:image/png;base64,{data}">{cap}')

    def table(self, heading: str | None, rows: list[dict], caption: str = "") -> None:
        if not rows:
            return
        cols = list(rows[0])
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
        body = "".join("<tr>" + "".join(f"<td>{_cell(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
        cap = f"<p>{html.escape(caption)}</p>" if caption else ""
        self.text(heading, f"{cap}<table><tr>{head}</tr>{body}</table>")

    def render(self) -> str:
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>{''.join(self.parts)}"
            "</body></html>"
        )

    def save(self, path: str | Path) -> None:
        write_text(path, self.render())


def _cell(v) -> str:
    if isinstance(v, Link):
        return f'<a href="{html.escape(v.href)}">{html.escape(v.text)}</a>'
    return html.escape(_fmt(v))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "" if v is None else str(v)
