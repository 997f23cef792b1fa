"""Contrast items ({prompt, target, foil}) as token ids for training and scoring learned interventions: the
prompt's ids and the first token of target and foil (tokenized in context), batched by equal length so that
positions counted from the end line up without padding, and the model's last-position logits."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from neuronlab.data.batching import forward_takes, model_inputs
from neuronlab.data.scoring import continuation_ids
from neuronlab.errors import NeuronlabError


@dataclass
class Encoded:
    ids: list[list[int]]
    target: Tensor  # [n] first token of each target
    foil: Tensor


def encode(tokenizer, items: Sequence[dict]) -> Encoded:
    ids, target, foil = [], [], []
    for i, item in enumerate(items):
        p, t = continuation_ids(tokenizer, item["prompt"], item["target"])
        _, f = continuation_ids(tokenizer, item["prompt"], item["foil"])
        if not p or not t or not f:
            raise NeuronlabError(f"item {i + 1} ({item['prompt'][:40]!r}): prompt, target or foil has no tokens")
        if t[0] == f[0]:
            raise NeuronlabError(
                f"item {i + 1}: target {item['target']!r} and foil {item['foil']!r} start with the "
                "same token; the logit difference is taken on the first token, so make them differ (or drop such "
                "items: --drop-ambiguous, fit_task(..., drop_ambiguous=True))"
            )
        ids.append(p)
        target.append(t[0])
        foil.append(f[0])
    return Encoded(ids, torch.tensor(target), torch.tensor(foil))


def same_length_batches(enc: Encoded, batch_size: int, shuffle: random.Random | None = None) -> list[list[int]]:
    """Item indices in batches of equal token length (no padding, so positions from the end line up)."""
    by_len: dict[int, list[int]] = {}
    for i, row in enumerate(enc.ids):
        by_len.setdefault(len(row), []).append(i)
    out = []
    for idx in by_len.values():
        if shuffle is not None:
            shuffle.shuffle(idx)
        out += [idx[s : s + batch_size] for s in range(0, len(idx), batch_size)]
    if shuffle is not None:
        shuffle.shuffle(out)
    return out


def last_logits(model, enc: Encoded, idx: list[int]) -> Tensor:
    ids = torch.tensor([enc.ids[i] for i in idx])
    keep = {"logits_to_keep": 1} if forward_takes(model, "logits_to_keep") else {}
    z = model(**model_inputs(model, ids), **keep).logits[:, -1]  # [batch, vocab]; only the last position is unembedded
    return z if z.dtype == torch.float64 else z.float()


def base_logits(model, enc: Encoded, batch_size: int) -> Tensor:
    """Last-position logits of every item, in item order, on the CPU: [n, vocab]."""
    order, parts = [], []
    with torch.no_grad():
        for idx in same_length_batches(enc, batch_size):
            order += idx
            parts.append(last_logits(model, enc, idx).cpu())
    return torch.cat(parts)[torch.argsort(torch.tensor(order))]
