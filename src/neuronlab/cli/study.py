"""neuronlab study NAME | study all: a paper's study on one or several models, its report and its verdicts.

neuronlab study arithmetic --model gemma-3-270m --model smollm2-135m-instruct --out runs/arith --size docs
neuronlab study scaling --model my-org/my-model --out runs/scaling --size smoke --set epochs=5
neuronlab study all --model gemma-3-270m --out runs/all --size smoke     # runs/all/index.html
neuronlab study page docs/real-models.md --results docs/results [--check]  # sections generated from results
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neuronlab.cli.common import friendly, group
from neuronlab.study import STUDIES, study, study_all, study_page

app = group("The five papers' studies, one command each: measured figures, each paper's claims and a verdict.")

ModelsOpt = Annotated[
    list[str], typer.Option("--model", "-m", help="Packaged name, .gguf file, folder or hub id; repeatable.")
]
OutOpt = Annotated[Path, typer.Option(help="Folder for results.json, report.html and each model's files.")]
SizeOpt = Annotated[str, typer.Option(help="smoke (minutes on 2 cores), docs (the docs' runs) or paper.")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="NAME=VALUE: change one setting of the size's preset; repeatable.")
]
DtypeOpt = Annotated[str | None, typer.Option(help="float32, float16 or bfloat16 (default: the checkpoint's).")]
DeviceOpt = Annotated[str | None, typer.Option(help="Device such as cuda:0; 'auto' spreads a large model.")]


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="study")
    for name, kind in STUDIES.items():
        app.command(name, help=f"{kind.title} ({kind.paper}).")(_command(name))
    app.command("all")(run_all)
    app.command("page")(page)


def _command(name: str):
    @friendly
    def run(
        model: ModelsOpt,
        out: OutOpt,
        size: SizeOpt = "docs",
        set_: SetOpt = None,
        dtype: DtypeOpt = None,
        device: DeviceOpt = None,
    ) -> None:
        results = study(name, model, out, size, dtype=dtype, device=device, log=typer.echo, overrides=set_ or [])
        for claim in results["claims"]:
            verdicts = ", ".join(f"{m}: {v}" for m, v in claim["verdicts"].items())
            typer.echo(f"- {claim['claim']}: {verdicts}")
        typer.echo(f"wrote {out / 'results.json'} and {out / 'report.html'}")

    return run


@friendly
def run_all(
    model: ModelsOpt, out: OutOpt, size: SizeOpt = "docs", dtype: DtypeOpt = None, device: DeviceOpt = None
) -> None:
    """Every study on every model, and DIR/index.html linking their reports."""
    done = study_all(model, out, size, dtype=dtype, device=device, log=typer.echo)
    for name, results in done.items():
        held = sum(v == "holds" for c in results["claims"] for v in c["verdicts"].values())
        total = sum(len(c["verdicts"]) for c in results["claims"])
        typer.echo(f"{name}: {held} of {total} claim verdicts hold")
    typer.echo(f"wrote {out / 'index.html'}")


@friendly
def page(
    page: Annotated[
        Path, typer.Argument(help="Markdown page with <!-- study: NAME --> ... <!-- end study --> sections.")
    ],
    results: Annotated[Path, typer.Option(help="Folder of NAME.json: each study's stored results.json.")],
    check: Annotated[bool, typer.Option(help="Change nothing; fail if a section differs from its results.")] = False,
) -> None:
    """Rewrite a page's study sections from stored results (the command, minutes, figures and verdicts)."""
    if study_page(page, results, check=check):
        typer.echo(f"{page}: sections rewritten from {results}")
    else:
        typer.echo(f"{page}: every section equals its results")
