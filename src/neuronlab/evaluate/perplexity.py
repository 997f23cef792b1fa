"""Perplexity and continuation log-probabilities; both honour an active `nl.apply` plan.

    nl.perplexity(model, tok, texts)                       # exp(token-weighted mean NLL)
    with nl.apply(model, plan):
        ppl = nl.perplexity(model, tok, texts)
    continuation_logprob(model, tok, ["The capital of France is"], [" Paris"])   # float64 [1]

Perplexity: every text is tokenized with its special tokens (BOS), split into windows of `max_length`,
right-padded; each window predicts its tokens 1.. from the ones before, so BOS (position 0) is never scored
and padding never counts. The result is exp(sum of NLL / number of scored tokens) over all texts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from neuronlab.data.batching import batches, pad_id, pad_right, windows
from neuronlab.data.scoring import continuation_ids, scored_tokens, token_nll
from neuronlab.dist import Shard, all_reduce, in_blocks, world
from neuronlab.errors import NeuronlabError

__all__ = ["continuation_ids", "continuation_logprob", "nll_sums", "perplexity", "scored_tokens", "token_nll"]


def nll_sums(model, tokenizer, texts: Sequence[str], batch_size: int = 8, max_length: int = 512) -> tuple[float, int]:
    """(sum of NLL in nats, number of scored tokens) over `texts`. Under torch.distributed each rank scores every
    size-th text and the ranks add their sums (`neuronlab.dist`)."""
    if isinstance(texts, str) or not any(t.strip() for t in texts):
        raise NeuronlabError("perplexity needs a list of non-empty texts")
    rank, size = world()
    total_t, count_t = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.int64)
    special = torch.tensor([], dtype=torch.long)
    with torch.no_grad():
        for batch in batches(
            windows(tokenizer, Shard(texts, rank, size), 0, max_length, False),
            batch_size,
            pad_id(tokenizer, model),
            special,
            True,
            bucket=16,
        ):
            nll = token_nll(model, batch.input_ids, batch.attention_mask, scored_tokens(batch.attention_mask))
            total_t += nll.double().sum().cpu()
            count_t += nll.numel()
    if size > 1:
        total_t, count_t = all_reduce(total_t), all_reduce(count_t)
    total, count = float(total_t), int(count_t)
    if count == 0:
        raise NeuronlabError("no token to score: texts must be at least two tokens long")
    return total, count


def perplexity(model, tokenizer, texts: Sequence[str], batch_size: int = 8, max_length: int = 512) -> float:
    """Token-weighted perplexity of `texts` (see module doc)."""
    total, count = nll_sums(model, tokenizer, texts, batch_size, max_length)
    return math.exp(total / count)


def continuation_logprob(
    model, tokenizer, prompts: Sequence[str], continuations: Sequence[str], batch_size: int = 16
) -> torch.Tensor:
    """log P(continuation | prompt), summed over the continuation's tokens, float64 [n].

    Write the continuation as it follows the prompt (" Paris" after "is"); see `continuation_ids`. Under
    torch.distributed each rank scores a block of the pairs and every rank gets all scores.
    """
    if len(prompts) != len(continuations):
        raise NeuronlabError("give one continuation per prompt")
    p_ids, c_ids = zip(
        *(continuation_ids(tokenizer, p, c) for p, c in zip(prompts, continuations, strict=True)), strict=True
    )
    for p, c, text in zip(p_ids, c_ids, continuations, strict=True):
        if not p:
            raise NeuronlabError("a prompt has no tokens (and the tokenizer adds no BOS): give each prompt text")
        if not c:
            raise NeuronlabError(f"continuation {text!r} has no tokens")
    pairs = list(zip(p_ids, c_ids, strict=True))
    scores = in_blocks(pairs, lambda part: _continuation_scores(model, tokenizer, part, batch_size).tolist())
    return torch.tensor(scores, dtype=torch.float64)


def _continuation_scores(
    model, tokenizer, pairs: Sequence[tuple[list[int], list[int]]], batch_size: int
) -> torch.Tensor:
    p_ids, c_ids = [p for p, _ in pairs], [c for _, c in pairs]
    out = []
    with torch.no_grad():
        for start in range(0, len(p_ids), batch_size):
            prompts = p_ids[start : start + batch_size]
            rows = [p + c for p, c in zip(prompts, c_ids[start : start + batch_size], strict=True)]
            ids, mask = pad_right(rows, pad_id(tokenizer, model))
            targets = torch.zeros_like(mask, dtype=torch.bool)
            for r, (row, p) in enumerate(zip(rows, prompts, strict=True)):
                targets[r, len(p) : len(row)] = True  # the continuation's tokens
            nll = token_nll(model, ids, mask, targets).double().cpu()
            out.append(torch.zeros(len(rows), dtype=torch.float64).index_add_(0, targets.nonzero()[:, 0], -nll))
    return torch.cat(out)
