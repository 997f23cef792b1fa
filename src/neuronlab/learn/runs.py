"""A training run of a learned intervention: `fit_task` (all of `neuronlab scale train`: a held-out share of
the groups, training on the rest, both measured) and the run folder it writes and `scale eval` / `scale show`
read.

    learned, metrics = nl.fit_task(model, tok, "pronoun.jsonl", method="activscalar", positions=8, out="run/")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from neuronlab.config import configured
from neuronlab.data.contrast import distinguishable, read_contrast, split
from neuronlab.errors import NeuronlabError
from neuronlab.io import check_writable
from neuronlab.learn.contrast_items import encode
from neuronlab.learn.methods import LearnedIntervention
from neuronlab.learn.scalars import ScalingConfig, evaluate_scaling, train_scaling

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
    from neuronlab.io import write_bytes, write_json
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
