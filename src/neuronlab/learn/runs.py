"""A training run of a learned intervention: `fit_task` (a held-out share of the groups, training on the rest,
both measured) and the run folder it writes; and the `neuronlab scale` commands as library calls, each checking
where it writes and reading its inputs before it loads the model (a (model, tokenizer) pair, or a function that
loads one).

    learned, metrics = nl.fit_task(model, tok, "pronoun.jsonl", method="activscalar", positions=8, out="run/")
    nl.run_scale_task("pronoun", "pronoun.jsonl", swap=True)                         # scale task
    metrics, files = nl.run_scale_train((model, tok), "pronoun.jsonl", "run/", positions=8)   # scale train
    metrics = nl.run_scale_eval((model, tok), "held.jsonl", "run/", out="m.json")             # scale eval
    summary = nl.run_scale_show("run/", top=5, plot="scalars.png")                           # scale show
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from neuronlab.config import configured
from neuronlab.data.contrast import TASKS, distinguishable, read_contrast, split, write_contrast
from neuronlab.errors import NeuronlabError
from neuronlab.io import check_writable, write_bytes, write_json
from neuronlab.learn.contrast_items import encode
from neuronlab.learn.methods import LearnedIntervention
from neuronlab.learn.scalars import ScalingConfig, evaluate_scaling, train_scaling
from neuronlab.models.load import ModelSource, loaded

LEARNED_FILE = "learned.safetensors"
RUN_FILES = (LEARNED_FILE, "plan.json", "metrics.json", "scalars.png")  # what save_run writes


def fit_task(
    model,
    tokenizer,
    items: Sequence[dict] | str | Path,
    config: ScalingConfig | None = None,
    holdout: float = 0.25,
    progress: bool = True,
    out: str | Path | None = None,
    drop_ambiguous: bool = False,
    **settings: Any,
) -> tuple[LearnedIntervention, dict]:
    """What `neuronlab scale train` does: hold out a seeded share of the groups of `items` (or of a task JSONL
    file), train on the rest (settings as in train_scaling), and measure both. With `drop_ambiguous`, items whose
    target and foil begin with the same token are dropped instead of refused; with `out`, the run folder is written
    (save_run). Returns the learned intervention (held-out groups in its meta) and {"train", "held_out", "epochs",
    "dropped"}."""
    cfg = configured(ScalingConfig, config, settings, "fit_task")
    if out is not None:
        check_writable(out, folder=True)
    if isinstance(items, str | Path):
        source, items = str(items), read_contrast(items)
    else:
        source, items = None, list(items)
    dropped = 0
    if drop_ambiguous:
        items, dropped = distinguishable(items, tokenizer)
    else:
        encode(tokenizer, items)  # every item checked before the split, numbered as given
    train_items, held_out = split(items, holdout, cfg.seed)
    learned = train_scaling(model, tokenizer, train_items, cfg, progress)
    learned.meta["held_out_groups"] = sorted({i["group"] for i in held_out})
    if source is not None:
        learned.meta["task"] = source
    metrics = {
        "train": evaluate_scaling(model, tokenizer, learned, train_items),
        "held_out": evaluate_scaling(model, tokenizer, learned, held_out),
        "epochs": len(learned.meta["history"]),
        "dropped": dropped,
    }
    if out is not None:
        save_run(out, learned, metrics)
    return learned, metrics


def save_run(out: str | Path, learned: LearnedIntervention, metrics: dict) -> list[str]:
    """A training run's folder: learned.safetensors, plan.json (+ its tensors), metrics.json, scalars.png."""
    from neuronlab.report.plots import learned as heatmap

    out = Path(out)
    learned.save(out / LEARNED_FILE)
    learned.to_plan().save(out / "plan.json")
    write_json(out / "metrics.json", metrics)
    write_bytes(out / "scalars.png", heatmap(learned))
    return list(RUN_FILES)


def run_file(path: str | Path) -> Path:
    """The learned-intervention file of a run folder (or the file itself)."""
    path = Path(path)
    if path.is_dir():
        for name in (LEARNED_FILE, "scaling.safetensors"):  # the second: runs saved before the rename
            if (path / name).is_file():
                return path / name
        raise NeuronlabError(f"{path} holds no {LEARNED_FILE}: give the folder `neuronlab scale train` wrote")
    return path


# ---------------------------------------------------------------- the scale commands


def run_scale_task(kind: str, out: str | Path, swap: bool = False) -> list[dict]:
    """items = run_scale_task("pronoun", "pronoun.jsonl", swap=True)   # 60 {prompt, target, foil, group}

    `neuronlab scale task`: the items of a templated contrast task (`TASKS`), written as JSONL to `out`."""
    build = TASKS[kind]  # an unknown name: one error listing the tasks
    check_writable(out)
    items = build(swap=swap)
    write_contrast(out, items)
    return items


def run_scale_train(
    model: ModelSource,
    task: str | Path,
    out: str | Path,
    config: ScalingConfig | None = None,
    holdout: float = 0.25,
    drop_ambiguous: bool = False,
    **settings: Any,
) -> tuple[dict, list[str]]:
    """metrics, files = run_scale_train(lambda: nl.load_model("M"), "pronoun.jsonl", "run/", positions=8)

    `neuronlab scale train`: `fit_task` on a task file, the run folder written to `out`; returns the metrics and
    the names of the files written. A bad task file fails before the model loads."""
    check_writable(out, folder=True)
    read_contrast(task)  # a bad task file fails before the model loads
    loaded_model, tok = loaded(model)
    _, metrics = fit_task(loaded_model, tok, task, config, holdout, out=out, drop_ambiguous=drop_ambiguous, **settings)
    return metrics, list(RUN_FILES)


def run_scale_eval(model: ModelSource, task: str | Path, scaling: str | Path, out: str | Path | None = None) -> dict:
    """metrics = run_scale_eval((model, tok), "held.jsonl", "run/", out="metrics.json")

    `neuronlab scale eval`: `evaluate_scaling` of a saved run (its folder or file) on a task file, also written as
    JSON to `out`."""
    check_writable(out)
    learned = LearnedIntervention.load(run_file(scaling))
    items = read_contrast(task)
    loaded_model, tok = loaded(model)
    metrics = evaluate_scaling(loaded_model, tok, learned, items)
    if out is not None:
        write_json(out, metrics)
    return metrics


def run_scale_show(scaling: str | Path, top: int = 10, plot: str | Path | None = None) -> str:
    """print(run_scale_show("run/", top=3, plot="scalars.png"))

    `neuronlab scale show`: the summary of a saved run (size, L1, the `top` parameters that moved most); with
    `plot`, its heatmap written there."""
    from neuronlab.report.plots import learned as heatmap

    check_writable(plot)
    learned = LearnedIntervention.load(run_file(scaling))
    if plot is not None:
        write_bytes(plot, heatmap(learned))
    return learned.summary(top)
