"""Fan et al. 2025 (arXiv 2501.03681): SLAM, which layers handle languages and an FFN-only fine-tune of them.

    nl.study("slam", ["gemma-3-270m"], "runs/slam", size="docs")

1. Layer selection: `record` the FFN activations (site act) of `lines` FLORES-200 lines in each language, then
   `select_layers` picks k layers by MSD (the spread over languages of each layer's count of activated neurons) and
   by the overlap variant (the spread of the overlap with English, given three languages or more); the paper picks
   the lowest six of LLaMA-2-7B's 32. The stats (stats.safetensors) and the MSD selection (layers.json) go to the
   model's folder.
2. Cost: an optimizer step (forward, loss, backward, AdamW) on `cost_batch` x `cost_tokens` seeded random tokens
   training the up and down projections of the chosen layers, against one training every parameter: the best
   seconds of `cost_steps` steps after a first untimed one, and the memory training adds to the weights (gradients
   and AdamW's moments, counted from the tensors after a step). The steps run at learning rate 0: the same work,
   the weights unchanged.
3. A short fine-tune (the Trainer, SLAM's lr 2e-5, `steps` steps of `batch_size` lines) of the chosen FFNs on the
   first `train_lines` FLORES lines of the target language; perplexity of `held_out` held-out lines (from line
   `held_from` on) in the target language and English, before and after.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from neuronlab.config import Config, option
from neuronlab.data.corpora import read_lines
from neuronlab.errors import NeuronlabError
from neuronlab.evaluate.perplexity import perplexity
from neuronlab.learn.finetune import FinetuneConfig, finetune, freeze_except_ffn
from neuronlab.models.resolve import arch_spec
from neuronlab.models.sites import decoder_layers
from neuronlab.record.recorder import record
from neuronlab.report.plots import bars, by_depth
from neuronlab.select.layers import select_layers
from neuronlab.study.base import FAILS, HOLDS, UNSURE, Claim, Phases, Study, register_study

BOTTOM, NOT_BOTTOM = 0.8, 0.5  # share of the chosen layers among the lowest k: holds at or above, fails at or below
MEMORY, ENGLISH_OK, ENGLISH_HURT = 2.0, 0.01, 0.05  # memory ratio; English perplexity rises allowed / hurting


@dataclass(frozen=True)
class SlamConfig(Config):
    flores: str = option("../shared/data/flores200_devtest", "folder of FLORES-200 files (eng_Latn.devtest, ...)")
    languages: tuple[str, ...] = option((), "languages to record, as their file prefixes (empty: every file)")
    lines: int = option(50, "FLORES lines per language to record")
    k: int = option(6, "layers to choose (SLAM: 6 of LLaMA-2-7B's 32; at most the model's layers)")
    threshold: float = option(0.5, "a neuron is activated for a language above this share of its tokens firing")
    english: str = option("eng", "English: the overlap's reference and the language the fine-tune must not hurt")
    target: str = option("fra", "the language of the short fine-tune")
    cost_batch: int = option(4, "rows of the timed optimizer step")
    cost_tokens: int = option(128, "tokens per row of the timed optimizer step")
    cost_steps: int = option(3, "timed optimizer steps (the best is kept) after an untimed first")
    steps: int = option(100, "fine-tuning steps")
    batch_size: int = option(4, "lines per fine-tuning step")
    lr: float = option(2e-5, "fine-tuning learning rate (SLAM: 2e-5)")
    train_lines: int = option(400, "target-language lines to fine-tune on (the first ones)")
    held_from: int = option(900, "first held-out line")
    held_out: int = option(60, "held-out lines per language for perplexity")
    seed: int = option(0, "seed of the timed step's tokens and of the fine-tune")

    def check(self) -> None:
        counts = (self.lines, self.k, self.cost_batch, self.cost_tokens, self.cost_steps, self.steps, self.batch_size)
        if min(counts) < 1 or min(self.train_lines, self.held_out) < 1 or self.lr <= 0:
            raise NeuronlabError("lines, k, cost_*, steps, batch_size, train_lines and held_out must be >= 1, lr > 0")
        if not 0 <= self.threshold < 1:
            raise NeuronlabError(f"threshold must be in [0, 1), got {self.threshold}")
        if self.train_lines > self.held_from:
            raise NeuronlabError(f"train_lines ({self.train_lines}) run into the held-out lines from {self.held_from}")


def flores_lines(cfg: SlamConfig) -> dict[str, list[str]]:
    """{language prefix: lines} of the FLORES folder (the configured languages, English and the target included)."""
    folder = Path(cfg.flores)
    found = {f.name.split("_")[0]: f for f in sorted(folder.glob("*.devtest"))} if folder.is_dir() else {}
    if not found:
        raise NeuronlabError(f"no FLORES-200 files (*.devtest) in {folder}: set flores= to their folder")
    chosen = list(cfg.languages) or list(found)
    missing = [x for x in dict.fromkeys([*chosen, cfg.english, cfg.target]) if x not in found]
    if missing:
        raise NeuronlabError(f"{folder} has no file for {', '.join(missing)}: it has {', '.join(found)}")
    return {x: read_lines(found[x], keep_blank=True) for x in dict.fromkeys([*chosen, cfg.english, cfg.target])}


def _limit(model, tokens: int) -> int:
    limit = arch_spec(model).position_limit(model.config)
    return min(tokens, limit) if isinstance(limit, int) else tokens


def step_cost(model, layers: list[int], modules: str, cfg: SlamConfig) -> dict[str, Any]:
    """Best seconds of an optimizer step after the first, the bytes training adds, and the trainable values."""
    trainable = freeze_except_ffn(model, layers, modules)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0)
    vocab = model.get_input_embeddings().num_embeddings
    shape = (cfg.cost_batch, _limit(model, cfg.cost_tokens))
    ids = torch.randint(min(3, vocab - 1), vocab, shape, generator=torch.Generator().manual_seed(cfg.seed))
    ids = ids.to(next(model.parameters()).device)
    best = float("inf")
    model.train()
    for step in range(cfg.cost_steps + 1):  # the first step allocates the optimizer state: not timed
        start = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=False)
        if step:
            best = min(best, time.perf_counter() - start)
    model.eval()
    state = [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t)]
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    memory = sum(t.numel() * t.element_size() for t in state + grads)
    for p in model.parameters():
        p.grad = None
    return {"step_seconds": best, "memory_bytes": memory, "trainable": trainable}


def lowest_share(layers: list[int]) -> float:
    """Share of the chosen layers that are among the model's lowest len(layers)."""
    return sum(layer < len(layers) for layer in layers) / len(layers)


def _normalised(scores: list[float]) -> list[float]:
    top = max(scores, default=0.0)
    return [s / top if top > 0 else 0.0 for s in scores]


@register_study
class Slam(Study):
    name = "slam"
    paper = "Fan et al. 2025, arXiv 2501.03681"
    title = "SLAM: the layers that handle languages, and fine-tuning only their FFNs"
    config = SlamConfig
    sizes: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"lines": 4, "steps": 5, "held_out": 16, "cost_tokens": 64, "cost_steps": 1},
        "docs": {},
        "paper": {"lines": 500, "steps": 1000},  # the paper tunes on its math data for 3 epochs: here, more text
    }

    def measure(self, model, tokenizer, cfg: SlamConfig, out: Path, phases: Phases) -> dict[str, Any]:
        flores = flores_lines(cfg)
        n = len(decoder_layers(model))
        k, window = min(cfg.k, n), _limit(model, 512)
        with phases("record and select layers"):
            texts = {x: [t for t in lines[: cfg.lines] if t.strip()] for x, lines in flores.items()}
            stats = record(model, tokenizer, texts, site="act", max_length=window)
            stats.save(out / "stats.safetensors")
            msd = select_layers(stats, k=k, method="msd", threshold=cfg.threshold)
            overlap = (  # the overlap with English compares two other languages at least
                select_layers(stats, k=k, method="overlap", threshold=cfg.threshold, reference=cfg.english)
                if len(texts) > 2
                else None
            )
            msd.save(out / "layers.json")
        with phases("cost of a step"):
            slam, full = step_cost(model, msd.layers, "up,down", cfg), step_cost(model, [], "all", cfg)
        held = {
            x: [t for t in flores[x][cfg.held_from :][: cfg.held_out] if t.strip()] for x in (cfg.target, cfg.english)
        }
        if not all(held.values()):
            raise NeuronlabError(f"no held-out lines from line {cfg.held_from} on: lower held_from")
        with phases("fine-tune"):
            before = {x: perplexity(model, tokenizer, lines, max_length=window) for x, lines in held.items()}
            items = [{"prompt": "", "response": t} for t in flores[cfg.target][: cfg.train_lines] if t.strip()]
            tune = FinetuneConfig(
                template="plain",
                max_steps=cfg.steps,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                cutoff=window,
                save_steps=10**9,
                seed=cfg.seed,
            )
            delta = finetune(model, tokenizer, items, msd.layers, tune, out=out / "finetune", resume=False)
            after = {x: perplexity(model, tokenizer, lines, max_length=window) for x, lines in held.items()}
            shutil.rmtree(out / "finetune" / "trainer", ignore_errors=True)  # the Trainer's copy of the whole model
        return {
            "languages": list(texts),
            "layers": n,
            "k": k,
            "selection": {
                "msd": msd.layers,
                "overlap": overlap and overlap.layers,
                "msd_scores": msd.scores,
                "overlap_scores": overlap and overlap.scores,
                "activated": msd.per_language,
            },
            "cost": {
                "ffn_only": slam,
                "full": full,
                "step_ratio": full["step_seconds"] / slam["step_seconds"],
                "memory_ratio": full["memory_bytes"] / slam["memory_bytes"],
            },
            "finetune": {
                "layers": msd.layers,
                "steps": delta.meta["steps"],
                "train_loss": delta.meta["train_loss"],
                "trainable": delta.meta["trainable"],
                "share": delta.meta["share"],
                "perplexity_before": before,
                "perplexity_after": after,
            },
        }

    def summary(self, figures: dict[str, dict[str, Any]], cfg: SlamConfig) -> dict[str, dict[str, str]]:
        rows: dict[str, dict[str, str]] = {}
        for m, f in figures.items():
            sel, cost, tuned = f["selection"], f["cost"], f["finetune"]
            rows.setdefault("layers by MSD", {})[m] = f"{sel['msd']} of {f['layers']}"
            rows.setdefault("layers by overlap", {})[m] = "n/a" if sel["overlap"] is None else f"{sel['overlap']}"
            rows.setdefault("seconds a step: FFN-only / full", {})[m] = (
                f"{cost['ffn_only']['step_seconds']:.2f} / {cost['full']['step_seconds']:.2f}"
            )
            rows.setdefault("memory training adds: FFN-only / full (MiB)", {})[m] = (
                f"{cost['ffn_only']['memory_bytes'] / 2**20:,.0f} / {cost['full']['memory_bytes'] / 2**20:,.0f}"
            )
            for x in (cfg.target, cfg.english):
                before, after = tuned["perplexity_before"][x], tuned["perplexity_after"][x]
                rows.setdefault(f"{x} held-out perplexity before -> after", {})[m] = f"{before:.2f} -> {after:.2f}"
        return rows

    def claims(self, figures: dict[str, dict[str, Any]], cfg: SlamConfig) -> list[Claim]:
        chosen = {m: f["selection"]["msd"] for m, f in figures.items()}
        bottom = {m: None if f["k"] >= f["layers"] else lowest_share(chosen[m]) for m, f in figures.items()}
        picked = "; ".join(f"{m}: {chosen[m]} of {f['layers']}" for m, f in figures.items())
        cost = {m: f["cost"] for m, f in figures.items()}
        tuned = {m: f["finetune"] for m, f in figures.items()}
        gain = {m: 1 - t["perplexity_after"][cfg.target] / t["perplexity_before"][cfg.target] for m, t in tuned.items()}
        hurt = {
            m: t["perplexity_after"][cfg.english] / t["perplexity_before"][cfg.english] - 1 for m, t in tuned.items()
        }
        return [
            Claim(
                "The layers that handle languages, by the spread of activated neurons across languages (MSD), are the "
                "bottom ones (the paper: the lowest six of LLaMA-2-7B's 32)",
                f"share of the k layers MSD picks that are among the model's lowest k (picked: {picked})",
                f"holds at {BOTTOM} or more, does not hold at {NOT_BOTTOM} or less, inconclusive between or when k "
                "covers every layer",
                dict(bottom),
                {
                    m: UNSURE if b is None else HOLDS if b >= BOTTOM else FAILS if b <= NOT_BOTTOM else UNSURE
                    for m, b in bottom.items()
                },
                figure=by_depth(
                    {
                        f"{m} {kind}": _normalised(f["selection"][f"{kind}_scores"])
                        for m, f in figures.items()
                        for kind in ("msd", "overlap")
                        if f["selection"][f"{kind}_scores"] is not None
                    },
                    "score / the model's largest",
                    "MSD (and the overlap variant) by layer",
                ),
            ),
            Claim(
                "Fine-tuning only the chosen layers' FFNs costs a fraction of a full fine-tune",
                "memory that training adds (gradients and AdamW moments) of the full fine-tune / of the FFN-only one "
                "(the step-time ratio, full / FFN-only, in the figure)",
                f"holds when the ratio is {MEMORY} or more and the FFN-only step is no slower than the full one; does "
                f"not hold below {MEMORY}; inconclusive when the memory holds but the step is slower (times on shared "
                "cores are noisy)",
                {m: c["memory_ratio"] for m, c in cost.items()},
                {
                    m: FAILS if c["memory_ratio"] < MEMORY else HOLDS if c["step_ratio"] >= 1 else UNSURE
                    for m, c in cost.items()
                },
                figure=bars(
                    {
                        "step time": {m: c["step_ratio"] for m, c in cost.items()},
                        "training memory": {m: c["memory_ratio"] for m, c in cost.items()},
                    },
                    "full fine-tune / FFN-only",
                    "cost of a step",
                ),
            ),
            Claim(
                f"A short FFN-only fine-tune of the chosen layers on {cfg.target} text improves it without hurting "
                f"English ({cfg.english})",
                f"relative fall of the held-out {cfg.target} perplexity, 1 - after / before",
                f"holds when it is above 0 and the {cfg.english} perplexity rises by at most {ENGLISH_OK:.0%}; "
                f"does not hold when it is 0 or below or {cfg.english} rises by more than {ENGLISH_HURT:.0%}; "
                "inconclusive between",
                dict(gain),
                {
                    m: FAILS if gain[m] <= 0 or hurt[m] > ENGLISH_HURT else HOLDS if hurt[m] <= ENGLISH_OK else UNSURE
                    for m in tuned
                },
                figure=bars(
                    {
                        x: {
                            m: 100 * (t["perplexity_after"][x] / t["perplexity_before"][x] - 1)
                            for m, t in tuned.items()
                        }
                        for x in (cfg.target, cfg.english)
                    },
                    "perplexity change, % (after / before - 1)",
                    "held-out perplexity after the fine-tune against before",
                ),
            ),
        ]
