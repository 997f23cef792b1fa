"""neuronlab scale task | train | eval | show: learned interventions (Stoehr et al. 2024)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neuronlab.cli.common import JsonOutOpt, ModelRef, PlotOpt, config_options, friendly, group, model_options
from neuronlab.data.contrast import TASKS
from neuronlab.learn.runs import run_scale_eval, run_scale_show, run_scale_task, run_scale_train
from neuronlab.learn.scalars import ScalingConfig

app = group("Learned interventions: activation scalars, steering vectors, dynamic scalars (Stoehr et al. 2024).")
RunOpt = Annotated[Path, typer.Option("--scaling", help="Folder from `scale train` (or its .safetensors file).")]
TaskOpt = Annotated[Path, typer.Option(help="JSONL items {prompt, target, foil[, group]}.")]


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="scale")


def _metrics_line(label: str, m: dict) -> None:
    flip = "n/a" if m["flip_rate"] is None else f"{m['flip_rate']:.3f}"
    typer.echo(
        f"{label} ({m['items']} items): flip rate {flip}  target>foil {m['accuracy_before']:.3f} -> "
        f"{m['success']:.3f}  logit diff {m['logit_diff_before']:+.2f} -> {m['logit_diff_after']:+.2f}  "
        f"KL on other tokens {m['kl']:.3f}  parameters {m['parameters']}  L1 {m['l1']:.2f}  "
        f"moved >{m['epsilon']}: {m['moved']}"
    )


@app.command("task")
@friendly
def scale_task(
    kind: Annotated[str, typer.Argument(help=f"{TASKS.names()}.")],
    out: Annotated[Path, typer.Option(help="JSONL file to write.")],
    swap: Annotated[bool, typer.Option(help="Exchange target and foil (the usual flipping task).")] = False,
) -> None:
    """Write a templated task: one {prompt, target, foil, group} per line."""
    items = run_scale_task(kind, out, swap)  # an unknown name: one error listing the tasks
    typer.echo(f"wrote {len(items)} items to {out}")


@app.command("train")
@friendly
@model_options()
@config_options(ScalingConfig)
def scale_train(
    model: ModelRef,
    task: TaskOpt,
    out: Annotated[Path, typer.Option(help="Folder for learned.safetensors, plan.json, metrics.json, scalars.png.")],
    cfg: ScalingConfig,
    holdout: Annotated[float, typer.Option(help="Share of groups held out for the reported metrics.")] = 0.25,
    drop_ambiguous: Annotated[
        bool,
        typer.Option(
            help="Drop items whose target and foil start with the same token (instead of stopping with an error)."
        ),
    ] = False,
) -> None:
    """Learn an intervention that makes each target beat its foil; report it on held-out groups."""
    metrics, files = run_scale_train(model.load, task, out, cfg, holdout, drop_ambiguous)
    if drop_ambiguous:
        kept = metrics["train"]["items"] + metrics["held_out"]["items"]
        typer.echo(f"dropped {metrics['dropped']} items whose target and foil start with the same token; {kept} left")
    _metrics_line("train", metrics["train"])
    _metrics_line("held out", metrics["held_out"])
    typer.echo(f"{metrics['epochs']} epochs; wrote {', '.join(files)} to {out}")


@app.command("eval")
@friendly
@model_options()
def scale_eval(model: ModelRef, task: TaskOpt, scaling: RunOpt, out: JsonOutOpt = None) -> None:
    """Flip rate, logit-difference change, KL on other tokens and minimality of a learned intervention."""
    _metrics_line(str(task), run_scale_eval(model.load, task, scaling, out))


@app.command("show")
@friendly
def scale_show(
    scaling: Annotated[Path, typer.Argument(help="Folder from `scale train` (or its .safetensors file).")],
    top: Annotated[int, typer.Option(help="List this many of the parameters that moved most.")] = 10,
    plot: PlotOpt = None,
) -> None:
    """Summarise a learned intervention: size, L1, what moved most; optionally a heatmap."""
    typer.echo(run_scale_show(scaling, top, plot))
    if plot is not None:
        typer.echo(f"wrote {plot}")
