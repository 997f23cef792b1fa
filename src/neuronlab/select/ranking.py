"""Ranking measures over many columns at once: how well each neuron's responses (a column of scores) rank the
positive items above the negatives. Both equal scikit-learn's per-column values, ties included (tested)."""

from __future__ import annotations

import torch
from torch import Tensor

from neuronlab.errors import NeuronlabError


def average_precision(scores: Tensor, labels: Tensor) -> Tensor:
    """AP of every column of `scores` [items, neurons] against bool `labels` [items], float64 [neurons]; equal to
    scikit-learn's `average_precision_score` per column, ties included (tied items enter at one threshold)."""
    labels = labels.bool()
    if scores.dim() != 2 or labels.shape != scores.shape[:1]:
        raise NeuronlabError(
            f"scores [items, neurons] and labels [items] do not fit: {tuple(scores.shape)}, {tuple(labels.shape)}"
        )
    positives = int(labels.sum())
    if positives == 0:
        raise NeuronlabError("average precision needs at least one positive item")
    s, order = scores.double().sort(dim=0, descending=True, stable=True)
    tp = labels[order].double().cumsum(0)  # [items, neurons]
    rank = torch.arange(1, scores.shape[0] + 1, dtype=torch.float64, device=scores.device)[:, None]
    last = torch.ones_like(s, dtype=torch.bool)
    last[:-1] = s[1:] != s[:-1]  # the last item of each group of tied scores: one threshold per group
    ends = torch.where(last, tp, torch.zeros_like(tp))
    before = torch.cat([torch.zeros_like(ends[:1]), ends[:-1]]).cummax(0).values  # tp at the previous threshold
    return (torch.where(last, (tp - before) * tp / rank, torch.zeros_like(tp)).sum(0) / positives).to(torch.float64)


def auroc(scores: Tensor, labels: Tensor) -> Tensor:
    """Area under the ROC curve of every column of `scores` [items, neurons], float64 [neurons]: the Mann-Whitney
    statistic with mid-ranks, so a tie between a positive and a negative counts one half (scikit-learn's value)."""
    labels = labels.bool()
    p, n = int(labels.sum()), int((~labels).sum())
    if p == 0 or n == 0:
        raise NeuronlabError("AUROC needs positive and negative items")
    s, order = scores.double().sort(dim=0, stable=True)
    idx = torch.arange(s.shape[0], device=s.device)[:, None].expand_as(s)
    first = torch.ones_like(s, dtype=torch.bool)
    first[1:] = s[1:] != s[:-1]
    last = torch.ones_like(s, dtype=torch.bool)
    last[:-1] = s[1:] != s[:-1]
    start = torch.where(first, idx, torch.zeros_like(idx)).cummax(0).values
    end = torch.where(last, idx, torch.full_like(idx, s.shape[0])).flip(0).cummin(0).values.flip(0)
    mid = (start + end).double() / 2 + 1  # mid-rank, 1-based
    rank_sum = (mid * labels[order].double()).sum(0)
    return (rank_sum - p * (p + 1) / 2) / (p * n)
