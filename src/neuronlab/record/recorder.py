"""record: stream texts through a model and accumulate per-neuron statistics at one site kind.

    stats = nl.record(model, tok, {"en": en_texts, "fr": fr_texts}, site="act", batch_size=8, max_length=512)
    stats = nl.record(model, tok, texts, checkpoint="s.safetensors")   # resumes from that file if it exists
    stats = record_to_file(model, tok, texts, "s.safetensors", datasets=["de=de.jsonl"])   # `neuronlab record`

How tokens are counted
- Each text is tokenized on its own (with the tokenizer's special tokens, e.g. BOS), split into windows of
  `max_length` tokens (or cut there with `truncate=True`), and windows are batched with right padding, so
  positions are never shifted. Padding never counts; special tokens (BOS, EOS, ...) do not count unless
  `count_special=True`, because BOS activations are outliers that would swamp short texts.
- `max_tokens` caps the tokens counted per group, exactly: the first ones in text order.
- Windows are sorted by length within buckets of `bucket` batches that end where a text ends, so rows of similar
  length share a batch and little compute goes to padding; the tokens counted are the same as in text order
  (sums differ only by float rounding), and checkpoints fall between buckets.
- `pooled_texts=N` also keeps, for the first N texts of each group, each neuron's mean and max over the
  text's counted tokens (Stats.pooled_mean / pooled_max), which LAPE's activation values and the
  expert-neuron method need.
- `contexts=True` also keeps each neuron's `top_k` top activating tokens over all groups with the tokens around
  them (Stats.contexts, see `neuronlab.record.topk`; what `neuronlab view` shows), resumed and combined over
  ranks like the rest, the same whatever the batch order.
- The forward pass stops right after the last recorded layer: the final norm and unembedding never run.
- With `checkpoint`, the stats are saved there atomically every `checkpoint_every` seconds (at a text
  boundary) and at the end; a later call with the same path continues where the file ends and never counts
  a text twice.
- Under torch.distributed (torchrun; see `neuronlab.dist`) each rank records its share of every group and the
  ranks combine counts, sums and maxima: the result equals one process's (counts exactly, sums to float64
  rounding), `meta["world_size"]` says how many ranks shared the work, and rank 0 writes `checkpoint`. Each rank
  checkpoints to `NAME.rankRofN.safetensors` beside it until the end, so a killed run resumes with the same N.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from neuronlab.config import Config, configured, option
from neuronlab.data.batching import Batch, batches, model_inputs, pad_id, windows
from neuronlab.data.corpora import merge_groups, parse_group_datasets
from neuronlab.dist import (
    Shard,
    all_gather,
    all_reduce,
    barrier,
    broadcast,
    hand_over,
    own_files,
    rank_files,
    rank_path,
    world,
)
from neuronlab.errors import NeuronlabError
from neuronlab.io import check_writable, remove_temps
from neuronlab.models.load import model_info
from neuronlab.models.sites import Site, SiteKind, decoder_layers, site_width, trace
from neuronlab.progress import progress_bar
from neuronlab.record.accumulator import Accumulator
from neuronlab.record.stats import Stats
from neuronlab.record.topk import NONE, TopContexts, pack, pieces


@dataclass(frozen=True)
class RecordConfig(Config):
    """The settings of `record` (besides model, texts and checkpoint): `record(model, tok, texts, cfg)`."""

    site: SiteKind = option("act", "site kind: act, neuron, ffn_out, attn_out, resid or router (MoE)")
    batch_size: int = option(8, "rows per forward pass")
    max_length: int = option(512, "tokens per window; longer texts are split")
    truncate: bool = option(False, "cut texts at max_length instead of splitting them")
    max_tokens: int | None = option(None, "count at most this many tokens per group")
    pooled_texts: int = option(0, "keep per-text mean/max for the first N texts per group")
    count_special: bool = option(False, "also count special tokens (BOS, EOS)")
    checkpoint_every: float = option(600.0, "seconds between checkpoints")
    bucket: int = option(32, "sort windows by length within groups of this many batches (less padding); 1: text order")
    contexts: bool = option(False, "keep each neuron's top activating contexts (for neuronlab view)")
    top_k: int = option(20, "contexts kept per neuron with contexts")

    def check(self) -> None:
        if self.batch_size < 1 or self.max_length < 1:
            raise NeuronlabError("batch_size and max_length must be at least 1")
        if self.contexts and self.top_k < 1:
            raise NeuronlabError(f"top_k is {self.top_k}: keep at least 1 context a neuron, or record without contexts")


def record(
    model,
    tokenizer,
    texts: Mapping[str, Iterable[str]],
    config: RecordConfig | None = None,
    *,
    checkpoint: str | Path | None = None,
    resume: bool | None = None,
    progress: bool = True,
    **settings: Any,
) -> Stats:
    """Per-group, per-layer, per-neuron statistics over `texts` ({group: texts}) with the settings of `config` (a
    RecordConfig) or its fields as keywords (`site="neuron", batch_size=4`); see module doc. With `checkpoint`, an
    existing file is continued (`resume=None` or True) or refused (`resume=False`, the CLI without --resume)."""
    cfg = configured(RecordConfig, config, settings, "record")
    site, batch_size, max_length, truncate = cfg.site, cfg.batch_size, cfg.max_length, cfg.truncate
    max_tokens, pooled_texts, count_special, top_k = cfg.max_tokens, cfg.pooled_texts, cfg.count_special, cfg.top_k
    checkpoint_every, bucket, contexts = cfg.checkpoint_every, cfg.bucket, cfg.contexts
    if not texts:
        raise NeuronlabError("no groups of texts given: pass {group: [text, ...]}")
    for group, items in texts.items():
        if isinstance(items, str):
            raise NeuronlabError(f"group {group!r} is one string: pass a list of texts")
        if hasattr(items, "__len__") and not any(t.strip() for t in items):
            raise NeuronlabError(f"group {group!r} has no text: give it at least one non-empty text")

    if checkpoint is not None:
        prepare_checkpoint(checkpoint, resume)
    settings = dict(max_length=max_length, truncate=truncate, max_tokens=max_tokens, count_special=count_special)
    top_k = top_k if contexts else 0
    if top_k:
        settings["top_k"] = top_k  # only then: files of earlier versions resume as before
    fresh = lambda pooled: _empty(model, list(texts), site, settings, pooled, top_k)  # noqa: E731
    run: dict[str, Any] = dict(batch_size=batch_size, checkpoint_every=checkpoint_every, bucket=bucket)
    rank, size = world()
    if size == 1:
        stats = fresh(pooled_texts)
        if checkpoint is not None and Path(checkpoint).is_file():
            stats = stats.resumed(Stats.load(checkpoint))
            stats.meta.setdefault("world_size", 1)  # files written before ranks existed
        return _record(model, tokenizer, texts, stats, checkpoint, progress, **run)
    return _record_ranks(model, tokenizer, texts, fresh, checkpoint, progress, rank, size, pooled_texts, run)


def record_to_file(
    model,
    tokenizer,
    texts: Mapping[str, Iterable[str]] | None,
    out: str | Path,
    config: RecordConfig | None = None,
    *,
    resume: bool | None = False,
    datasets: Sequence[str] = (),
    split: str = "train",
    column: str = "text",
    subset: str | None = None,
    limit: int | None = None,
    progress: bool = True,
    **settings: Any,
) -> Stats:
    """stats = record_to_file(model, tok, {"en": lines}, "s.safetensors", datasets=["fr=fr.jsonl"], resume=True)

    `record` into the checkpoint `out` over `texts` ({group: texts}) and the `GROUP=SOURCE` strings of `datasets`
    (the CLI's --dataset: a data file or a hub id, streamed with `datasets`, `split`, `column`, `subset`, at most
    `limit` rows each); `resume=False` refuses an existing `out`. `neuronlab record` is this call."""
    groups = dict(texts or {})
    merge_groups(groups, parse_group_datasets(list(datasets), split, column, subset, limit))
    return record(model, tokenizer, groups, config, checkpoint=out, resume=resume, progress=progress, **settings)


def prepare_checkpoint(checkpoint: str | Path, resume: bool | None) -> None:
    """Before any work, on every rank: refuse an existing checkpoint unless resuming (`check_checkpoint`), a path
    that cannot be written, and clear what a run killed mid-write left; then wait for every rank, so no rank refuses
    the fresh rank file of another."""
    check_checkpoint(checkpoint, resume)
    check_writable(checkpoint)  # before any work: a bad path never costs a recorded group
    rank, size = world()
    if rank == 0:
        remove_temps(checkpoint)  # what a run killed mid-write left beside its checkpoints
    if size > 1:
        remove_temps(rank_path(checkpoint, rank, size))
    barrier()


def check_checkpoint(checkpoint: str | Path, resume: bool | None) -> None:
    """With `resume=False`, one error where the checkpoint (or the rank files of a killed run of several processes)
    is already there; `record` calls it first, and a command before it loads the model."""
    checkpoint = Path(checkpoint)
    if resume is not False:
        return
    if checkpoint.exists():
        raise NeuronlabError(f"{checkpoint} exists: pass --resume to continue it, or choose another --out")
    ranks = [p.name for p in rank_files(checkpoint)]
    if ranks:
        raise NeuronlabError(
            f"{', '.join(ranks)} hold a killed run of several processes: pass --resume to continue it, or delete them"
        )


def _empty(model, groups: list[str], site: str, settings: dict, pooled_texts: int, top_k: int) -> Stats:
    meta = {
        "model": model_info(model),
        "site": site,
        "settings": settings,
        "complete": [],
        "world_size": world()[1],
    }
    width = site_width(model, site)
    return Stats.empty(groups, len(decoder_layers(model)), width, meta, pooled_texts, top_k)


def _keys(batch: Batch, g: int, texts) -> Tensor:
    """int64 [batch, pos]: the context keys of the batch's tokens (group, text index over all ranks, position in
    the text), NONE where a token is not counted."""
    index = getattr(texts, "global_index", lambda i: i)
    text = torch.tensor([index(t) for t in batch.text])[:, None]
    position = torch.tensor(batch.start)[:, None] + torch.arange(batch.input_ids.shape[1])
    return torch.where(batch.count, pack(g, text, position), NONE)


def _record(
    model,
    tokenizer,
    texts,
    stats: Stats,
    checkpoint,
    progress: bool,
    batch_size: int,
    checkpoint_every: float,
    bucket: int,
    allow_empty: bool = False,
) -> Stats:
    """Record the groups `stats` does not mark complete, adding to it (one process, or one rank's share)."""
    site, settings = stats.site, stats.meta["settings"]
    max_length, truncate, max_tokens = settings["max_length"], settings["truncate"], settings["max_tokens"]
    pooled_texts = stats.meta["pooled_texts"]
    layers = list(range(stats.n_layers))
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
    count_special = settings["count_special"]
    acc = Accumulator(pooled_texts, stats.contexts)
    sites = [Site(layer, site) for layer in layers]

    last_save = time.monotonic()
    bar = progress_bar(unit="tok", enabled=progress, unit_scale=True)
    with torch.no_grad():
        for g, group in enumerate(stats.groups):
            if group in stats.meta["complete"]:
                continue
            bar.set_description(group)
            spans = windows(tokenizer, texts[group], int(stats.texts[g]), max_length, truncate)
            budget = None if max_tokens is None else max_tokens - int(stats.tokens[g])
            for batch in batches(
                spans,
                batch_size,
                pad_id(tokenizer, model),
                special,
                count_special,
                bucket,
                budget,
                plain_below=pooled_texts,
            ):
                acc.start(batch, None if stats.contexts is None else _keys(batch, g, texts[group]))
                with trace(model, sites, stop=True, reduce=acc.add) as tr:  # the head never runs
                    model(**model_inputs(model, batch.input_ids, batch.attention_mask), use_cache=False)
                if tr.missing():
                    missing = ", ".join(str(s) for s in tr.missing())
                    raise NeuronlabError(
                        f"site(s) {missing} never ran in the forward pass; the ArchSpec does not "
                        "match how this model computes its FFN: give it one with nl.set_arch(model, nl.ArchSpec(...))"
                    )
                n = int(batch.count.sum())
                stats.tokens[g] += n
                bar.update(n)
                stats.texts[g] = batch.done
                if pooled_texts:
                    acc.flush_pooled(stats, g, layers, batch.done)
                if checkpoint is not None and batch.boundary and time.monotonic() - last_save > checkpoint_every:
                    acc.flush(stats, g)
                    stats.save(checkpoint)
                    last_save = time.monotonic()
            acc.flush(stats, g)
            if pooled_texts:
                acc.flush_pooled(stats, g, layers, 1 << 62)
            if int(stats.tokens[g]) == 0 and not allow_empty:
                raise NeuronlabError(f"group {group!r} has no text that yields countable tokens: give it real text")
            stats.meta["complete"].append(group)
            if stats.contexts is not None:
                stats.meta["pieces"] = pieces(tokenizer, stats.contexts.tokens)
            if checkpoint is not None:
                stats.save(checkpoint)
                last_save = time.monotonic()
    bar.close()
    return stats


def _record_ranks(
    model, tokenizer, texts, fresh, checkpoint, progress: bool, rank: int, size: int, pooled_texts: int, run: dict
) -> Stats:
    """Each rank records its `Shard` of every group (rank 0 also the first `pooled_texts` texts, for their per-text
    rows) into its own checkpoint; the ranks then add counts and sums and take maxima, and rank 0 writes the one
    file. A finished file is returned as it is; a killed run resumes rank by rank with the same number of ranks."""
    if fresh(0).meta["settings"]["max_tokens"] is not None:
        raise NeuronlabError(
            "max_tokens counts the first tokens of each group in text order, which ranks cannot "
            "share: cap the texts instead (--limit), or run one process"
        )
    groups, mine = list(texts), None
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        if checkpoint.is_file():
            done = fresh(pooled_texts).resumed(Stats.load(checkpoint))
            if set(done.meta["complete"]) == set(groups):
                return done
            raise NeuronlabError(
                f"{checkpoint} holds an unfinished run of one process: resume it with one process, "
                "or write to another path"
            )
        mine = rank_path(checkpoint, rank, size)
    local = fresh(pooled_texts if rank == 0 else 0)
    if mine is not None and mine.is_file():
        local = local.resumed(Stats.load(mine))
    shards = {g: Shard(texts[g], rank, size, first=pooled_texts) for g in groups}
    with own_files():
        local = _record(model, tokenizer, shards, local, mine, progress and rank == 0, allow_empty=True, **run)

    stats = Stats.empty(groups, local.n_layers, local.width, local.meta, pooled_texts)
    for key in ("tokens", "texts", "active", "sum", "sum_sq"):
        setattr(stats, key, all_reduce(getattr(local, key)))
    stats.max = all_reduce(local.max, "max")
    for key in ("pooled_mean", "pooled_max", "pooled_n") if pooled_texts else ():
        setattr(stats, key, broadcast(getattr(local if rank == 0 else stats, key)))
    if local.contexts is not None:
        parts = [TopContexts(*p) for p in zip(*(all_gather(t) for t in local.contexts.tensors()), strict=True)]
        stats.contexts = parts[0].merged(parts[1:])
        stats.meta["pieces"] = pieces(tokenizer, stats.contexts.tokens)
    empty = [g for g, n in zip(groups, stats.tokens.tolist(), strict=True) if n == 0]
    if empty:
        raise NeuronlabError(f"group {empty[0]!r} has no text that yields countable tokens: give it real text")
    if checkpoint is not None and mine is not None:
        hand_over(mine, lambda: stats.save(checkpoint))
    return stats
