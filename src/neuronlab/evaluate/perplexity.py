"""Perplexity and continuation log-probabilities; both honour an active `nl.apply` plan.

    >>> nl.perplexity(model, tok, texts)                       # exp(token-weighted mean NLL)
    >>> with nl.apply(model, plan):
    ...     ppl = nl.perplexity(model, tok, texts)
    >>> continuation_logprob(model, tok, ["The capital of France is"], [" Paris"])   # float64 [1]

Perplexity: every text is tokenized with its special tokens (BOS), split into windows of `max_length`,
right-padded; each window predicts its tokens 1.. from the ones before, so BOS (position 0) is never scored
and padding never counts. The result is exp(sum of NLL / number of scored tokens) over all texts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from neuronlab.data.batching import batches, forward_takes, model_inputs, pad_id, pad_right, windows
from neuronlab.dist import Shard, all_reduce, in_blocks, world
from neuronlab.errors import NeuronlabError


def _token_nll(model, input_ids, attention_mask, first: int = 0):
    """NLL of each token after position `first` given the ones before it, float32 [batch, pos-1-first], and which
    of them count. The model unembeds only the positions needed (`logits_to_keep`, Hugging Face's own slicing)."""
    inputs = model_inputs(model, input_ids, attention_mask)
    keep = input_ids.shape[1] - first
    extra = {"logits_to_keep": keep} if first and forward_takes(model, "logits_to_keep") else {}
    logits = model(**inputs, use_cache=False, **extra).logits[:, -keep:-1]
    input_ids, attention_mask = inputs["input_ids"], inputs["attention_mask"]
    target = input_ids[:, first + 1 :]
    nll = F.cross_entropy(logits.float().transpose(1, 2), target, reduction="none")
    return nll, attention_mask[:, first + 1 :].bool()


def nll_sums(model, tokenizer, texts: Sequence[str], batch_size: int = 8, max_length: int = 512) -> tuple[float, int]:
    """(sum of NLL in nats, number of scored tokens) over `texts`. Under torch.distributed each rank scores every
    size-th text and the ranks add their sums (`neuronlab.dist`)."""
    if isinstance(texts, str) or not any(t.strip() for t in texts):
        raise NeuronlabError("perplexity needs a list of non-empty texts")
    rank, size = world()
    total, count = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.int64)
    special = torch.tensor([], dtype=torch.long)
    with torch.no_grad():
        for batch in batches(windows(tokenizer, Shard(texts, rank, size), 0, max_length, False), batch_size,
                             pad_id(tokenizer, model), special, True, bucket=16):  # fmt: skip
            nll, mask = _token_nll(model, batch.input_ids, batch.attention_mask)
            total += nll[mask].double().sum().cpu()
            count += int(mask.sum())
    if size > 1:
        total, count = all_reduce(total), all_reduce(count)
    total, count = float(total), int(count)
    if count == 0:
        raise NeuronlabError("no token to score: texts must be at least two tokens long")
    return total, count


def perplexity(model, tokenizer, texts: Sequence[str], batch_size: int = 8, max_length: int = 512) -> float:
    """Token-weighted perplexity of `texts` (see module doc)."""
    total, count = nll_sums(model, tokenizer, texts, batch_size, max_length)
    return math.exp(total / count)


def continuation_logprob(model, tokenizer, prompts: Sequence[str], continuations: Sequence[str],
                         batch_size: int = 16) -> torch.Tensor:  # fmt: skip
    """log P(continuation | prompt), summed over the continuation's tokens, float64 [n].

    Write the continuation as it follows the prompt (" Paris" after "is"); see `continuation_ids`. Under
    torch.distributed each rank scores a block of the pairs and every rank gets all scores.
    """
    if len(prompts) != len(continuations):
        raise NeuronlabError("give one continuation per prompt")
    p_ids, c_ids = zip(*(continuation_ids(tokenizer, p, c) for p, c in zip(prompts, continuations)))
    for p, c, text in zip(p_ids, c_ids, continuations):
        if not p:
            raise NeuronlabError("a prompt has no tokens (and the tokenizer adds no BOS): give each prompt text")
        if not c:
            raise NeuronlabError(f"continuation {text!r} has no tokens")
    pairs = list(zip(p_ids, c_ids))
    scores = in_blocks(pairs, lambda part: _continuation_scores(model, tokenizer, part, batch_size).tolist())
    return torch.tensor(scores, dtype=torch.float64)


def _continuation_scores(model, tokenizer, pairs: list[tuple[list[int], list[int]]], batch_size: int) -> torch.Tensor:
    p_ids, c_ids = [p for p, _ in pairs], [c for _, c in pairs]
    out = []
    with torch.no_grad():
        for start in range(0, len(p_ids), batch_size):
            prompts = p_ids[start : start + batch_size]
            rows = [p + c for p, c in zip(prompts, c_ids[start : start + batch_size])]
            ids, mask = pad_right(rows, pad_id(tokenizer, model))
            first = min(len(p) for p in prompts) - 1  # no logits are needed before the first continuation
            score = torch.zeros(len(rows), ids.shape[1] - 1 - first, dtype=torch.bool)
            for r, (row, p) in enumerate(zip(rows, prompts)):
                score[r, len(p) - 1 - first : len(row) - 1 - first] = True  # predictions of the continuation
            nll, _ = _token_nll(model, ids, mask, first)
            out.append(-(nll.double().cpu() * score).sum(1))
    return torch.cat(out)


def continuation_ids(tokenizer, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of a prompt (with special tokens) and of its continuation in context: the tokens of
    prompt + continuation after the prompt's own, when the prompt's tokens are a prefix of them (true for
    most tokenizers, including those that add a dummy space); else the continuation tokenized alone."""
    p = tokenizer(prompt)["input_ids"]
    full = tokenizer(prompt + continuation)["input_ids"]
    if full[: len(p)] == p and len(full) > len(p):
        return p, full[len(p) :]
    return p, tokenizer(continuation, add_special_tokens=False)["input_ids"]
