"""Recording a mixture of experts' neurons and routing per group (language): what LAPE over experts and over expert
neurons reads.

    stats = record_experts(model, tok, {"en": en_texts, "fr": fr_texts}, batch_size=8, max_length=512)
    stats.usage(); stats.probability()     # ExpertStats (`record/expert_stats.py`)

Tokens are counted as `record` counts them (the same windows and batches; padding never, special tokens unless
`count_special`). For each counted token the router's choice is read where the experts run (`models/moe.py`), so
only the chosen experts compute, as in the model's own forward: per (layer, expert) the tokens routed and the sum of
their router weights, per (layer, expert, neuron) how many of those tokens it fired on (value > 0) and the sum of
its values. Where the MoE layers hold a shared expert (`models/moe.py`, SHARED), its neurons, which every token
reaches, are counted in `shared_active` and `shared_sum` [groups, layers, shared d_ff].
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from neuronlab.config import Config, configured, option
from neuronlab.data.batching import batches, forward_takes, model_inputs, pad_id, windows
from neuronlab.dist import Shard, all_reduce, hand_over, own_files, rank_path, world
from neuronlab.errors import NeuronlabError
from neuronlab.models.load import model_info, require_same_model
from neuronlab.models.moe import SHARED, expert_neurons, experts_by_layer
from neuronlab.progress import progress_bar
from neuronlab.record.expert_stats import SHARED_TENSORS, SUMS, ExpertStats
from neuronlab.record.recorder import prepare_checkpoint


@dataclass(frozen=True)
class ExpertRecordConfig(Config):
    """The settings of `record_experts` (the CLI mirrors them)."""

    batch_size: int = option(8, "windows a forward pass")
    max_length: int = option(512, "tokens a window (longer texts are split into windows)")
    count_special: bool = option(False, "count special tokens (BOS, EOS) too")

    def check(self) -> None:
        if self.batch_size < 1 or self.max_length < 2:
            raise NeuronlabError("batch_size must be at least 1 and max_length at least 2")


def record_experts(
    model,
    tokenizer,
    texts: Mapping[str, Sequence[str]],
    config: ExpertRecordConfig | None = None,
    progress: bool = True,
    checkpoint: str | Path | None = None,
    checkpoint_every: float = 300.0,
    resume: bool | None = None,
    **settings: Any,
) -> ExpertStats:
    """Expert and expert-neuron statistics of `texts` ({group: texts}) through `model` (module doc), with the
    settings of `config` or its fields as keywords (`batch_size=4`). With `checkpoint`, the stats are saved there
    (atomically, between texts) every `checkpoint_every` seconds and after each group, and a run whose checkpoint
    exists continues after the texts it holds (`resume=False` refuses it instead): no text is counted twice. Under
    several processes (torchrun) each rank records its share of every group and the ranks add their counts and sums
    (`_ranks`)."""
    cfg = configured(ExpertRecordConfig, config, settings, "record_experts")
    if checkpoint is not None:
        prepare_checkpoint(checkpoint, resume)
    layouts = experts_by_layer(model)
    widths = {(lay.experts, lay.d_ff) for lay in layouts.values()}
    if len(widths) > 1:
        raise NeuronlabError(f"the MoE layers differ in experts or d_ff ({sorted(widths)}): not served yet")
    (experts, d_ff), layers = widths.pop(), sorted(layouts)
    shared = {lay.shared_d_ff for lay in layouts.values() if lay.shared}
    if len(shared) > 1 or (shared and any(lay.shared is None for lay in layouts.values())):
        raise NeuronlabError("the MoE layers differ in their shared experts: not served yet")
    rank, size = world()
    meta = {"model": model_info(model), "settings": cfg.to_dict(), "complete": [], "world_size": size}
    stats = ExpertStats.empty(list(texts), layers, experts, d_ff, meta, shared.pop() if shared else 0)
    if size > 1:
        return _ranks(model, tokenizer, texts, stats, checkpoint, checkpoint_every, progress, rank, size)
    if checkpoint is not None and Path(checkpoint).is_file():
        stats = _resumed(ExpertStats.load(checkpoint), stats, checkpoint)
    return _record(model, tokenizer, texts, stats, checkpoint, checkpoint_every, progress)


def _ranks(model, tokenizer, texts, stats: ExpertStats, checkpoint, checkpoint_every, progress, rank, size):
    """Each rank records its `Shard` of every group into its own checkpoint (NAME.rankRofN), the ranks add their
    counts and sums, and rank 0 writes the one file; a killed run resumes rank by rank with as many ranks."""
    mine = None
    if checkpoint is not None:
        if Path(checkpoint).is_file():
            done = _resumed(ExpertStats.load(checkpoint), stats, checkpoint)
            if set(done.meta["complete"]) == set(stats.groups):
                return done
            raise NeuronlabError(
                f"{checkpoint} holds an unfinished run of one process: resume it with one process, or write to "
                "another path"
            )
        mine = rank_path(checkpoint, rank, size)
    local = _resumed(ExpertStats.load(mine), stats, mine) if mine is not None and mine.is_file() else stats
    shards = {g: Shard(texts[g], rank, size) for g in stats.groups}
    with own_files():
        local = _record(model, tokenizer, shards, local, mine, checkpoint_every, progress and rank == 0, True)
    out = stats.blank(stats.groups, dict(local.meta))
    for key in out.tensor_names():
        setattr(out, key, all_reduce(getattr(local, key)))
    empty = [g for g, n in zip(out.groups, out.tokens.tolist(), strict=True) if n == 0]
    if empty:
        raise NeuronlabError(f"group {empty[0]!r} has no text that yields countable tokens: give it real text")
    if checkpoint is not None and mine is not None:
        hand_over(mine, lambda: out.save(checkpoint))
    return out


def _record(
    model,
    tokenizer,
    texts,
    stats: ExpertStats,
    checkpoint,
    checkpoint_every: float,
    progress: bool,
    allow_empty: bool = False,
) -> ExpertStats:
    """Record the groups `stats` does not mark complete, adding to it (one process, or one rank's share)."""
    settings = stats.meta["settings"]
    batch_size, max_length, count_special = settings["batch_size"], settings["max_length"], settings["count_special"]
    row = {layer: i for i, layer in enumerate(stats.layers)}
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
    keep = {"logits_to_keep": 1} if forward_takes(model, "logits_to_keep") else {}
    g, counted = 0, torch.zeros(0, dtype=torch.bool)
    running: dict[int, dict[str, Tensor]] = {}  # per layer, on the experts' device: the sums since the last flush

    sums = SUMS + (SHARED_TENSORS if stats.shared_d_ff else ())

    def add(layer: int, e: int, tokens: Tensor, weights: Tensor, h: Tensor) -> None:
        acc = running.get(layer)
        if acc is None:  # the stats' row shapes, where this layer's experts compute: no copy or sync per expert
            acc = running[layer] = {k: torch.zeros_like(getattr(stats, k)[0, 0], device=h.device) for k in sums}
        on = counted.to(h.device, non_blocking=True)[tokens]
        values = h[on].double()
        if e == SHARED:  # every token reaches it: its rate is over the group's tokens
            acc["shared_active"] += (values > 0).sum(0)
            acc["shared_sum"] += values.sum(0)
            return
        acc["routed"][e] += on.sum()
        acc["weight"][e] += weights[on].double().sum()
        acc["active"][e] += (values > 0).sum(0)
        acc["sum"][e] += values.sum(0)

    def flush() -> None:
        """Move the running sums into the stats of group `g` (before a save, and at the end of a group)."""
        for layer, acc in running.items():
            for k, value in acc.items():
                getattr(stats, k)[g, row[layer]] += value.cpu()
                value.zero_()

    bar = progress_bar(unit="tok", enabled=progress, unit_scale=True)
    last_save = time.monotonic()
    with torch.no_grad(), expert_neurons(model, add, shared=bool(stats.shared_d_ff)):
        for g, group in enumerate(stats.groups):
            if group in stats.meta["complete"]:
                continue
            bar.set_description(group)
            spans = windows(tokenizer, texts[group], int(stats.texts[g]), max_length, truncate=False)
            for batch in batches(spans, batch_size, pad_id(tokenizer, model), special, count_special):
                counted = batch.count.flatten()  # the experts see the block's tokens flattened [batch * pos]
                model(**model_inputs(model, batch.input_ids, batch.attention_mask), use_cache=False, **keep)
                stats.tokens[g] += int(counted.sum())
                stats.texts[g] = batch.done
                bar.update(int(counted.sum()))
                if checkpoint is not None and batch.boundary and time.monotonic() - last_save > checkpoint_every:
                    flush()
                    stats.save(checkpoint)
                    last_save = time.monotonic()
            flush()
            if int(stats.tokens[g]) == 0 and not allow_empty:
                raise NeuronlabError(f"group {group!r} has no text that yields countable tokens: give it real text")
            if hasattr(texts[group], "__len__"):  # a rank's Shard is read lazily: it keeps the count it reached
                stats.texts[g] = len(texts[group])
            stats.meta["complete"].append(group)
            if checkpoint is not None:
                stats.save(checkpoint)
                last_save = time.monotonic()
    bar.close()
    return stats


def _resumed(old: ExpertStats, new: ExpertStats, path: str | Path) -> ExpertStats:
    """The checkpoint's stats to continue, refused (with the way out) where they belong to another run."""
    require_same_model(old.meta.get("model"), new.meta["model"], f"the expert stats in {path}")
    if old.tensor_names() != new.tensor_names():
        raise NeuronlabError(
            f"{path} holds expert stats recorded {'without' if old.shared_active is None else 'with'} a shared "
            "expert's neurons, unlike this model's: record again to another path"
        )
    settings = {k: v for k, v in old.meta.get("settings", {}).items() if k != "neuronlab"}
    if old.groups != new.groups or settings != {k: v for k, v in new.meta["settings"].items() if k != "neuronlab"}:
        raise NeuronlabError(
            f"{path} holds expert stats of other groups or settings ({old.groups}, {settings}): give another "
            "path, or remove it to start again"
        )
    return old


def record_experts_to_file(
    model,
    tokenizer,
    texts: Mapping[str, Sequence[str]],
    out: str | Path,
    config: ExpertRecordConfig | None = None,
    resume: bool = False,
) -> ExpertStats:
    """`record_experts` with `out` as its checkpoint (what `neuronlab moe record` runs): an existing `out` is
    continued with `resume`, refused without it."""
    return record_experts(model, tokenizer, texts, config, checkpoint=out, resume=resume)
