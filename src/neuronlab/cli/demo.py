"""neuronlab demo | report: the whole language-neuron pipeline, and its report rendered again."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neuronlab.cli.common import ModelRef, PatternOpt, config_options, friendly, model_options, writable
from neuronlab.demo.pipeline import DEMO_MODEL, PipelineConfig


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
    app.command("report")(report)


@friendly
def report(
    results: Annotated[Path, typer.Argument(help="results.json written by `neuronlab demo`.")],
    out: Annotated[Path | None, typer.Option(help="HTML file (default: report.html beside the results).")] = None,
) -> None:
    """Render the HTML report again from a results.json."""
    from neuronlab.report.language import report_from_results

    typer.echo(f"wrote {report_from_results(results, out)}")


@friendly
@config_options(PipelineConfig)
@model_options(default=str(DEMO_MODEL), help="Model (default: the embedded demo model).")
def demo(
    cfg: PipelineConfig,
    model: ModelRef,
    out: Annotated[Path, typer.Option(help="Folder for report.html and the artifacts.")] = Path("neuronlab-demo"),
    data: Annotated[Path | None, typer.Option(help="Folder of GROUP files (default: the embedded demo data).")] = None,
    pattern: PatternOpt = "*.txt",
) -> None:
    """Run the whole language-neuron pipeline and write DIR/report.html (offline on the embedded model)."""
    from neuronlab.demo.pipeline import run_demo

    writable(out, folder=True)
    loaded, tok = model.load()
    results = run_demo(loaded, tok, out, cfg, data, pattern, log=typer.echo)
    for k, v in results["checks"].items():
        typer.echo(f"{k}: {v}")
