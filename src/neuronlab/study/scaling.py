"""Stoehr et al. 2024 (arXiv 2410.04962): activation scaling, a few learned scalars that flip a prediction.

    nl.study("scaling", ["smollm2-135m-instruct"], "runs/scaling", size="docs")

Tasks (`neuronlab.data.contrast`): pronoun (" she" after a girl's name, " he" after a boy's), IOI (the name not
repeated) and capital (the true capital, not the one the context states); items whose target and foil share a first
token are dropped. First the model's own accuracy (target above foil) on each; then, on the swapped task (flip
she/he, give the repeated name, follow the context), `fit_task` learns ActivScalar (one scalar per site and position
from the end), SteerVec (one vector per site and position: the steering-vector baseline) and DynScalar (a scalar
function of the activation) on the groups (names, name pairs, countries) left after holding out `holdout` of them,
and measures the held-out ones: flip rate, target-above-foil share, KL on the other tokens, parameters and
parameters moved. ActivScalar and DynScalar are then applied to the same held-out groups written in templates of
other lengths. Each run's folder (learned.safetensors, plan.json, metrics.json, scalars.png) goes under the model's.
A task the model does below chance (own accuracy under 0.5) is reported and left out of the verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

from neuronlab.config import Config, option
from neuronlab.data.contrast import CAPITAL_TEMPLATE, capital_task, distinguishable, ioi_task, pronoun_task, split
from neuronlab.errors import NeuronlabError
from neuronlab.learn.runs import fit_task
from neuronlab.learn.scalars import ScalingConfig, evaluate_scaling, init_scaling
from neuronlab.report.plots import bar_panels, bars
from neuronlab.study.base import FAILS, HOLDS, UNSURE, Claim, Phases, Study, register_study

Task = Literal["pronoun", "ioi", "capital"]
Method = Literal["activscalar", "steervec", "dynscalar"]
TASKS: tuple[str, ...] = get_args(Task)
METHODS: tuple[str, ...] = get_args(Method)
KEYS = ("flip_rate", "success", "accuracy_before", "kl", "parameters", "moved", "logit_diff_change")
CHANCE = 0.5  # a task the model does below this is left out of the verdicts
FLIP_MARGIN, FEWER = 0.1, 100  # ActivScalar's flip rate within 0.1 of SteerVec's, with >= 100x fewer parameters
CARRY_MARGIN = 0.05  # DynScalar's flip rate on other lengths above ActivScalar's by more than this

OTHER_PRONOUN = (
    "There was a {kind} called {name}. Every day,",
    "Once upon a time, in a small house, there lived a little {kind}. The {kind}'s name was {name}. One sunny morning,",
)
OTHER_IOI = (
    "After {a} and {b} met, {b} said hello to",
    "On a long and rainy afternoon, {a} and {b} stayed inside the old library together, and later {b} handed the "
    "book to",
)
OTHER_CAPITAL = "Some say the capital of {country} is {wrong}. In truth, the capital of {country} is"


@dataclass(frozen=True)
class ScalingStudyConfig(Config):
    tasks: tuple[Task, ...] = option(("pronoun", "ioi", "capital"), "tasks to study: pronoun, ioi, capital")
    methods: tuple[Method, ...] = option(
        ("activscalar", "steervec", "dynscalar"), "methods to learn: activscalar, steervec, dynscalar"
    )
    epochs: int = option(40, "at most this many passes over the training items (each method, each task)")
    patience: int = option(8, "stop after this many epochs without a better validation loss")
    positions: int | None = option(None, "last N prompt positions to scale (default: the longest training prompt)")
    holdout: float = option(0.25, "share of the groups (names, name pairs, countries) held out")
    ioi_items: int = option(120, "IOI items (random name pairs and templates)")
    seed: int = option(0, "seed of the items, the split, the validation split and the initialisation")

    def check(self) -> None:
        for name, given, known in (("tasks", self.tasks, TASKS), ("methods", self.methods, METHODS)):
            if not given or any(x not in known for x in given):
                raise NeuronlabError(f"{name} must be among {', '.join(known)}, not {list(given)}")
        if self.epochs < 1 or self.patience < 1 or self.ioi_items < 4:
            raise NeuronlabError("epochs and patience must be at least 1, ioi_items at least 4")
        if not 0 < self.holdout < 1:
            raise NeuronlabError(f"holdout must be between 0 and 1, not {self.holdout}")


def task_items(task: str, swap: bool, cfg: ScalingStudyConfig, other: bool = False) -> list[dict]:
    """The task's items (`other`: the same groups in templates of other lengths)."""
    if task == "pronoun":
        return pronoun_task(templates=OTHER_PRONOUN, swap=swap) if other else pronoun_task(swap=swap)
    if task == "ioi":
        if other:
            return ioi_task(templates=OTHER_IOI, swap=swap, seed=cfg.seed)
        return ioi_task(n_items=cfg.ioi_items, swap=swap, seed=cfg.seed)
    template = OTHER_CAPITAL if other else CAPITAL_TEMPLATE
    return capital_task(template=template, swap=swap, seed=cfg.seed)


def _task(model, tok, task: str, cfg: ScalingStudyConfig, out: Path, phases: Phases) -> dict[str, Any]:
    with phases("model accuracy"):
        plain, dropped = distinguishable(task_items(task, False, cfg), tok)
        if len({i["group"] for i in plain}) < 2:  # e.g. a character tokenizer: " she" and " he" both start with " "
            return {"model_accuracy": None, "items": len(plain), "dropped": dropped, "runs": {}}
        own = evaluate_scaling(model, tok, init_scaling(model, ScalingConfig(), 1), plain)
    items = distinguishable(task_items(task, True, cfg), tok)[0]
    held = {i["group"] for i in split(items, cfg.holdout, cfg.seed)[1]}
    other = [i for i in distinguishable(task_items(task, True, cfg, other=True), tok)[0] if i["group"] in held]
    runs: dict[str, Any] = {}
    for method in cfg.methods:
        settings = ScalingConfig(
            method=method, epochs=cfg.epochs, patience=cfg.patience, positions=cfg.positions, seed=cfg.seed
        )
        with phases(f"fit {method}"):
            run_out = out / f"{task}-{method}"
            learned, metrics = fit_task(model, tok, items, settings, cfg.holdout, out=run_out)
        run = {part: {k: metrics[part][k] for k in KEYS} for part in ("held_out", "train")}
        run["epochs"] = metrics["epochs"]
        if method != "steervec" and other:
            with phases("other lengths"):
                run["other_lengths"] = {
                    k: v for k, v in evaluate_scaling(model, tok, learned, other).items() if k in KEYS
                }
        runs[method] = run
    return {
        "model_accuracy": own["accuracy_before"],
        "logit_diff": own["logit_diff_before"],
        "items": len(items),
        "dropped": dropped,
        "held_out_groups": len(held),
        "other_items": len(other),
        "runs": runs,
    }


def _flip(task: dict, method: str, part: str = "held_out") -> float | None:
    return task["runs"].get(method, {}).get(part, {}).get("flip_rate")


def counted(tasks: dict[str, dict]) -> dict[str, dict]:
    """The tasks that count for the verdicts: those the model does at chance or better."""
    return {t: r for t, r in tasks.items() if r["model_accuracy"] is not None and r["model_accuracy"] >= CHANCE}


def _pairs(tasks: dict[str, dict], a: str, b: str, part: str) -> list[tuple[float, float, dict]]:
    """(method a's flip rate, method b's, the task) for the counted tasks where both exist."""
    found = [(_flip(r, a, part), _flip(r, b, part), r) for r in counted(tasks).values()]
    return [(x, y, r) for x, y, r in found if x is not None and y is not None]


def flip_gap(tasks: dict[str, dict]) -> tuple[float | None, float | None]:
    """(mean of ActivScalar's minus SteerVec's held-out flip rate, the smallest SteerVec / ActivScalar parameter
    ratio) over the counted tasks where both flip rates exist; (None, None) where there is none."""
    both = _pairs(tasks, "activscalar", "steervec", "held_out")
    if not both:
        return None, None
    gap = sum(x - y for x, y, _ in both) / len(both)
    runs = [r["runs"] for _, _, r in both]
    ratio = min(r["steervec"]["held_out"]["parameters"] / r["activscalar"]["held_out"]["parameters"] for r in runs)
    return gap, ratio


def carry_gap(tasks: dict[str, dict]) -> float | None:
    """Mean of DynScalar's minus ActivScalar's flip rate on other prompt lengths over the counted tasks."""
    both = _pairs(tasks, "dynscalar", "activscalar", "other_lengths")
    return sum(x - y for x, y, _ in both) / len(both) if both else None


def _cell(value: float | None) -> str:
    """0.93, or n/a where nothing was there to flip (the model never put the target first)."""
    return "n/a" if value is None else f"{value:.2f}"


def _panels(tasks: dict[str, dict[str, dict]], methods: tuple[str, ...]) -> bytes:
    """Held-out flip rate, KL and parameters (log) per task, one bar per model and method."""
    names = list(dict.fromkeys(t for ts in tasks.values() for t in ts))

    def held_out(key: str) -> dict[str, dict[str, float | None]]:
        return {
            t: {
                f"{m} {method}": tasks[m].get(t, {}).get("runs", {}).get(method, {}).get("held_out", {}).get(key)
                for m in tasks
                for method in methods
            }
            for t in names
        }

    keys = {"held-out flip rate": "flip_rate", "KL on other tokens": "kl", "parameters": "parameters"}
    return bar_panels({label: held_out(key) for label, key in keys.items()}, log_y=("parameters",))


@register_study
class Scaling(Study):
    name = "scaling"
    paper = "Stoehr et al. 2024, arXiv 2410.04962"
    title = "Activation scaling: a few scalars flip a prediction (ActivScalar, DynScalar, steering vectors)"
    config = ScalingStudyConfig
    sizes: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"tasks": ("ioi",), "epochs": 3, "ioi_items": 40},
        "docs": {"epochs": 30},
        "paper": {"epochs": 200, "patience": 20, "ioi_items": 200},  # ScalingConfig's full training budget
    }

    def measure(self, model, tokenizer, cfg: ScalingStudyConfig, out: Path, phases: Phases) -> dict[str, Any]:
        return {"tasks": {task: _task(model, tokenizer, task, cfg, out, phases) for task in cfg.tasks}}

    def summary(self, figures: dict[str, dict[str, Any]], cfg: ScalingStudyConfig) -> dict[str, dict[str, str]]:
        rows: dict[str, dict[str, str]] = {}
        for m, f in figures.items():
            for t, r in f["tasks"].items():
                own = r["model_accuracy"]
                rows.setdefault(f"{t}: the model's own accuracy", {})[m] = (
                    "no items" if own is None else f"{own:.2f} ({r['items']} items)"
                )
                for method, run in r["runs"].items():
                    held = run["held_out"]
                    rows.setdefault(f"{t}: {method} held-out flip / KL / parameters", {})[m] = (
                        f"{_cell(held['flip_rate'])} / {_cell(held['kl'])} / {held['parameters']:,}"
                    )
                    if "other_lengths" in run:
                        rows.setdefault(f"{t}: {method} flip on other prompt lengths", {})[m] = _cell(
                            run["other_lengths"]["flip_rate"]
                        )
        return rows

    def claims(self, figures: dict[str, dict[str, Any]], cfg: ScalingStudyConfig) -> list[Claim]:
        tasks = {m: f["tasks"] for m, f in figures.items()}
        left_out = [
            f"{m} {t} ({'no items' if r['model_accuracy'] is None else format(r['model_accuracy'], '.2f')})"
            for m, ts in tasks.items()
            for t, r in ts.items()
            if t not in counted(ts)
        ]
        note = f" Left out: {', '.join(left_out)}." if left_out else ""
        flips = {m: flip_gap(ts) for m, ts in tasks.items()}
        carry = {m: carry_gap(ts) for m, ts in tasks.items()}
        measured = {m: [r for r in ts.values() if r["model_accuracy"] is not None] for m, ts in tasks.items()}
        done = {
            m: sum(r["model_accuracy"] >= CHANCE for r in rs) / len(rs) if rs else None for m, rs in measured.items()
        }
        return [
            Claim(
                "ActivScalar flips held-out prompts about as well as a steering vector, with far fewer parameters",
                "ActivScalar's held-out flip rate minus SteerVec's, mean over the tasks the model does (own accuracy "
                f">= {CHANCE})",
                f"holds when the difference is -{FLIP_MARGIN} or more and SteerVec has at least {FEWER}x as many "
                "parameters on every such task; does not hold otherwise; inconclusive with no such task." + note,
                {m: flips[m][0] for m in tasks},
                {
                    m: UNSURE if g is None else HOLDS if g >= -FLIP_MARGIN and (r or 0) >= FEWER else FAILS
                    for m, (g, r) in flips.items()
                },
                figure=_panels(tasks, cfg.methods),
            ),
            Claim(
                "DynScalar carries over to prompts of other lengths better than ActivScalar",
                "DynScalar's flip rate on the held-out groups in templates of other lengths minus ActivScalar's, mean "
                f"over the tasks the model does (own accuracy >= {CHANCE})",
                f"holds above {CARRY_MARGIN}, does not hold at 0 or below, inconclusive between or with no such task."
                + note,
                dict(carry),
                {
                    m: UNSURE if c is None else HOLDS if c > CARRY_MARGIN else FAILS if c <= 0 else UNSURE
                    for m, c in carry.items()
                },
                figure=bars(
                    {
                        t: {
                            f"{m} {method}": _flip(ts[t], method, "other_lengths")
                            for m, ts in tasks.items()
                            if t in ts
                            for method in ("activscalar", "dynscalar")
                        }
                        for t in cfg.tasks
                    },
                    "flip rate, other prompt lengths",
                    "held-out groups, templates of other lengths",
                ),
            ),
            Claim(
                "The model does each task (puts the target above the foil) before any intervention: the premise of "
                "flipping it",
                f"share of the tasks with the model's own accuracy >= {CHANCE} (tasks with no items whose target and "
                "foil the tokenizer tells apart are not counted)",
                "holds when every task is at or above chance, does not hold when none is, inconclusive when some are "
                "(those below are left out of the other claims' verdicts) or none could be measured." + note,
                dict(done),
                {m: UNSURE if d is None else HOLDS if d == 1 else FAILS if d == 0 else UNSURE for m, d in done.items()},
                figure=bars(
                    {t: {m: ts[t]["model_accuracy"] for m, ts in tasks.items() if t in ts} for t in cfg.tasks},
                    "target above foil (own accuracy)",
                    f"the model's own accuracy (chance {CHANCE})",
                ),
            ),
        ]
