"""Turn texts into right-padded batches of token windows: shared by record, perplexity and scoring.

    for batch in batches(windows(tok, texts, skip=0, max_length=512, truncate=False), 8, pad_id, special):
        model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)

Each text is tokenized on its own (with the tokenizer's special tokens) and split into windows of
`max_length` tokens (or cut there); rows are padded on the right so positions never shift. Also the small
pieces every evaluator shares: `pad_right`, `pad_id`, `input_device`, and `left_padded` for prompts whose
last position must be their end (generation, logit lens, relation scores).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor

from neuronlab.errors import NeuronlabError
from neuronlab.models.sites import module_device


@dataclass
class Batch:
    input_ids: Tensor  # [batch, pos]
    attention_mask: Tensor  # [batch, pos]
    count: Tensor  # bool [batch, pos]: positions that are counted
    text: list[int]  # text index of each row
    last_window: list[int]  # 1 where the row is its text's last window
    start: list[int]  # where each row's window starts in its text (token index)
    done: int = 0  # texts complete once this batch has run (all texts below this index)
    boundary: bool = True  # no window of a text at or after `done` has run: a safe point to save


def windows(tokenizer, texts: Iterable[str], skip: int, max_length: int, truncate: bool, chunk: int = 256):
    """Yield (text index, token ids, is last window, start in the text) for each window of each text after the
    first `skip`."""

    def flush(start: int, part: list[str]):
        for offset, ids in enumerate(tokenizer(part, add_special_tokens=True)["input_ids"]):
            starts = [0] if truncate else range(0, len(ids), max_length)
            for k, s in enumerate(starts):
                yield start + offset, ids[s : s + max_length], k == len(starts) - 1, s

    part, start = [], skip
    for i, text in enumerate(texts):
        if i < skip:
            continue
        if not isinstance(text, str):
            raise NeuronlabError(f"text {i} is a {type(text).__name__}, not a string: pass lists of strings")
        part.append(text)
        if len(part) == chunk:
            yield from flush(start, part)
            part, start = [], i + 1
    if part:
        yield from flush(start, part)


def batches(
    windows,
    batch_size: int,
    pad_id: int,
    special: Tensor,
    count_special: bool,
    bucket: int = 1,
    budget: int | None = None,
    plain_below: int = 0,
) -> Iterator[Batch]:
    """Batches of `windows` (text index, ids, is last window, start) in text order, or with `bucket > 1` sorted by
    length (longest first) within buckets of about `bucket` batches that end where a text ends, so that rows of
    similar length share a batch and little is padding. `budget` counts at most that many tokens, the first ones in text
    order whatever the sorting; windows of texts below `plain_below` are never sorted.

    Each batch's `done` says how many texts are complete once it has run; `boundary` marks a batch after which no
    window of a later text has run (a safe point to save and resume from)."""
    rows, done, left = [], None, budget
    for row in windows:
        if done is None:
            done = row[0]
        rows.append(row)
        size = batch_size if bucket <= 1 or row[0] < plain_below else batch_size * bucket
        if len(rows) >= size and (size == batch_size or row[2]):
            rows, caps, left = _cap(rows, left, special, count_special)
            for batch in _bucket(rows, caps, batch_size, pad_id, special, count_special, bucket, done):
                done = batch.done
                yield batch
            rows = []
            if left is not None and left <= 0:
                return
    if rows:
        rows, caps, left = _cap(rows, left, special, count_special)
        yield from _bucket(rows, caps, batch_size, pad_id, special, count_special, bucket, done)


def _cap(rows, left, special, count_special):
    """(rows, tokens each row may count, budget left): the rows in text order up to the one that spends the budget
    `left` (None: no budget, no caps)."""
    caps = [None] * len(rows)
    if left is not None:
        skip = frozenset() if count_special else frozenset(special.tolist())
        for r, (_, span, *_) in enumerate(rows):
            caps[r] = min(sum(t not in skip for t in span), left)
            left -= caps[r]
            if left <= 0:
                return rows[: r + 1], caps[: r + 1], left
    return rows, caps, left


def _bucket(rows, caps, batch_size, pad_id, special, count_special, bucket, done):
    """Yield the batches of one bucket of rows given in text order (`done`: texts complete before it)."""
    end_text, end_last = rows[-1][0], rows[-1][2]
    order = range(len(rows))
    if bucket > 1 and len(rows) > batch_size:
        order = sorted(order, key=lambda r: -len(rows[r][1]))  # stable: equal lengths keep text order
    order = list(order)
    for start in range(0, len(order), batch_size):
        part = order[start : start + batch_size]
        final = start + batch_size >= len(order)
        batch = collate([rows[r] for r in part], pad_id, special, count_special, [caps[r] for r in part])
        batch.done = (end_text + 1 if end_last else end_text) if final else done
        batch.boundary = final and bool(end_last)
        yield batch


def collate(rows, pad_id: int, special: Tensor, count_special: bool, caps: list | None = None) -> Batch:
    ids, mask = pad_right([span for _, span, *_ in rows], pad_id)
    count = mask.bool() if count_special else mask.bool() & ~torch.isin(ids, special)
    if caps is not None and any(c is not None for c in caps):
        limit = torch.tensor([ids.shape[1] if c is None else c for c in caps])[:, None]
        count = count & (count.cumsum(1) <= limit)
    text, last, start = [r[0] for r in rows], [int(r[2]) for r in rows], [r[3] for r in rows]
    return Batch(ids, mask, count, text, last, start, text[-1] + 1 if last[-1] else text[-1], bool(last[-1]))


def pad_right(seqs: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """input_ids and attention_mask, int64 [rows, longest], for token lists padded on the right."""
    width = max(len(seq) for seq in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, seq in enumerate(seqs):
        ids[r, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[r, : len(seq)] = 1
    return ids, mask


def vocab_rows(model) -> int:
    """Rows of the input embedding: every token id fed to the model must be below this."""
    return int(model.get_input_embeddings().weight.shape[0])


def pad_id(tokenizer, model) -> int:
    """An id to pad with that the model has. Padding is always masked, so any such id will do: the tokenizer's
    pad id, or where that lies outside the embedding (a tokenizer that adds its own pad token) EOS, else 0."""
    rows = vocab_rows(model)
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None and 0 <= candidate < rows:
            return int(candidate)
    return 0


def model_inputs(model, input_ids: Tensor, attention_mask: Tensor | None = None, **extra) -> dict:
    """Keyword arguments for `model(...)` on its input device, after checking every id against the embedding
    size: a tokenizer with more tokens than the model (added tokens) fails here with the fix, not with an
    IndexError deep in the embedding."""
    rows = vocab_rows(model)
    real = input_ids if attention_mask is None else input_ids[attention_mask.bool()]
    if real.numel() and (int(real.max()) >= rows or int(real.min()) < 0):
        bad = int(real.max()) if int(real.max()) >= rows else int(real.min())
        raise NeuronlabError(
            f"token id {bad} is outside the model's embedding ({rows} rows): the tokenizer does not "
            "match the model (added tokens?); use the model's own tokenizer or resize the "
            "embedding with model.resize_token_embeddings(len(tokenizer))"
        )
    device = input_device(model)
    out = {"input_ids": input_ids.to(device), **{k: v.to(device) for k, v in extra.items()}}
    if attention_mask is not None:
        out["attention_mask"] = attention_mask.to(device)
    return out


def input_device(model) -> torch.device:
    """Where a model's inputs go (the input embedding's device; with device_map, the first device)."""
    return module_device(model.get_input_embeddings())


def forward_takes(model, name: str) -> bool:
    """Whether the model's forward accepts keyword `name` (e.g. logits_to_keep, position_ids)."""
    return _forward_takes(cast(Any, type(model)), name)  # (a class is hashable; mypy's stub says otherwise)


@functools.cache
def _forward_takes(cls: Any, name: str) -> bool:
    return name in inspect.signature(cls.forward).parameters


def left_padded(
    model, tokenizer, prompts: Sequence[str], batch_size: int, positions: bool = False
) -> Iterator[tuple[int, dict]]:
    """(start index, model inputs on the model's device) for prompts padded on the left, so the last position
    of every row is its prompt's end. The padding side is passed per call: the tokenizer is never changed.

    For a plain forward pass give `positions=True`: position_ids then count from each row's first real token
    (models such as GPT-2 otherwise number the padding too, which shifts learned positions). `generate`
    derives them from the attention mask itself, so leave it False there."""
    pad = pad_id(tokenizer, model)
    for start in range(0, len(prompts), batch_size):
        part = list(prompts[start : start + batch_size])
        enc = tokenizer(part, return_tensors="pt", padding=True, padding_side="left")
        ids, mask = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, pad), enc["attention_mask"]
        extra = {}
        if positions and forward_takes(model, "position_ids"):
            extra["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        yield start, model_inputs(model, ids, mask, **extra)
