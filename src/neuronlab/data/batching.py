"""Turn texts into right-padded batches of token windows: shared by record, perplexity and scoring.

    >>> for batch in batches(windows(tok, texts, skip=0, max_length=512, truncate=False), 8, pad_id, special):
    ...     model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)

Each text is tokenized on its own (with the tokenizer's special tokens) and split into windows of
`max_length` tokens (or cut there); rows are padded on the right so positions never shift.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from neuronlab.errors import NeuronlabError


@dataclass
class Batch:
    input_ids: Tensor  # [batch, pos]
    attention_mask: Tensor  # [batch, pos]
    count: Tensor  # bool [batch, pos]: positions that are counted
    text: list[int]  # text index of each row
    last_window: list[int]  # 1 where the row is its text's last window


def windows(tokenizer, texts: Iterable[str], skip: int, max_length: int, truncate: bool, chunk: int = 256):
    """Yield (text index, token ids, is last window) for each window of each text after the first `skip`."""

    def flush(start: int, part: list[str]):
        for offset, ids in enumerate(tokenizer(part, add_special_tokens=True)["input_ids"]):
            spans = [ids[:max_length]] if truncate else [ids[s : s + max_length] for s in range(0, len(ids), max_length)]
            for k, span in enumerate(spans):
                yield start + offset, span, k == len(spans) - 1

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


def batches(windows, batch_size: int, pad_id: int, special: Tensor, count_special: bool) -> Iterator[Batch]:
    rows = []
    for row in windows:
        rows.append(row)
        if len(rows) == batch_size:
            yield collate(rows, pad_id, special, count_special)
            rows = []
    if rows:
        yield collate(rows, pad_id, special, count_special)


def collate(rows, pad_id: int, special: Tensor, count_special: bool) -> Batch:
    width = max(len(ids) for _, ids, _ in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (_, span, _) in enumerate(rows):
        ids[r, : len(span)] = torch.tensor(span, dtype=torch.long)
        mask[r, : len(span)] = 1
    count = mask.bool() if count_special else mask.bool() & ~torch.isin(ids, special)
    return Batch(ids, mask, count, [t for t, _, _ in rows], [int(last) for _, _, last in rows])
