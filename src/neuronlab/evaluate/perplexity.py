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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuronlab.data.batching import batches, model_inputs, pad_id, pad_right, vocab_rows, windows
from neuronlab.dist import Shard, all_reduce, in_blocks, world
from neuronlab.errors import NeuronlabError
from neuronlab.models.arch import ArchSpec, arch_spec, text_config
from neuronlab.models.sites import StopForward, get_module

CHUNK_VALUES = 2**25  # float32 logits held at once (128 MB)
MIN_SLICE = 1024  # vocabulary entries unembedded together at the least (the matmul's efficiency)
UNDERFLOW = -80.0  # exp(-80) ~ 2e-35: a logit this far below the row's maximum adds nothing to the softmax sum


@contextmanager
def _unembedding_input(model, spec: ArchSpec) -> Iterator[dict]:
    """{"h": what the unembedding receives (the final norm's output)} for the forward pass run in the block; the pass
    stops there, so the model computes no logits at all."""
    held: dict = {}

    def pre_hook(_module, args, kwargs):
        held["h"] = args[0] if args else next(iter(kwargs.values()))
        raise StopForward

    handle = get_module(model, spec.unembed).register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        yield held
    except StopForward:
        pass
    finally:
        handle.remove()


def scored_tokens(attention_mask: Tensor) -> Tensor:
    """bool [batch, pos]: the tokens perplexity scores in right-padded windows, every real token after the first
    (the first has nothing before it)."""
    targets = attention_mask.bool()
    targets[:, 0] = False
    return targets


def token_nll(
    model, input_ids: Tensor, attention_mask: Tensor, targets: Tensor, arch: ArchSpec | None = None
) -> Tensor:
    """NLL in nats (float32 [n]) of each token where `targets` [batch, pos] is True, given the tokens before it, in
    the order of `targets.nonzero()` (position 0 has nothing before it and may not be a target).

    One path for every score (perplexity, continuations, LSS, attribution), at about the cost of one forward pass:
    the forward stops at the unembedding; only the n positions that predict a target are unembedded (no padding,
    no prompt positions), with the model's own logit scale and soft-cap (`ArchSpec.logits`, proven equal to the
    model's logits), in float32, a chunk at a time so that the logits of a whole batch never exist (see
    `_nll_by_vocabulary`). Gradients flow when enabled (attribution)."""
    if targets[:, 0].any():
        raise NeuronlabError("position 0 has no tokens before it: it cannot be scored")
    spec = arch_spec(model, arch)
    inputs = model_inputs(model, input_ids, attention_mask)
    with _unembedding_input(model, spec) as held:
        model(**inputs, use_cache=False)
    if "h" not in held:
        raise NeuronlabError(f"the forward pass never reached the unembedding ({spec.unembed}): check the ArchSpec")
    h = held["h"]
    if h.shape[:2] != input_ids.shape:
        raise NeuronlabError(
            f"the unembedding received shape {tuple(h.shape)} for input ids of shape "
            f"{tuple(input_ids.shape)}: the model does not unembed every position"
        )
    rows, cols = targets.to(h.device).nonzero(as_tuple=True)
    wanted = inputs["input_ids"].to(h.device)[rows, cols]
    h = h[rows, cols - 1]  # [n, d_model]: the positions that predict the targets
    unembed, config = get_module(model, spec.unembed), text_config(model)
    logits = lambda z: spec.logits(config, z).float()  # noqa: E731
    if type(unembed) is nn.Linear and unembed.weight.device.type != "meta":
        return _nll_by_vocabulary(h, unembed.weight, unembed.bias, wanted, logits)
    out, step = [], max(1, CHUNK_VALUES // vocab_rows(model))  # any other unembedding (quantized, offloaded)
    for start in range(0, h.shape[0], step):
        z = torch.log_softmax(logits(unembed(h[start : start + step])), -1)
        out.append(-z.gather(-1, wanted[start : start + step, None].to(z.device))[:, 0])
    return torch.cat(out) if out else h.new_zeros(0, dtype=torch.float32)


def _nll_by_vocabulary(h: Tensor, weight: Tensor, bias: Tensor | None, wanted: Tensor, logits) -> Tensor:
    """-log softmax(logits(h W^T + b))[wanted] for the rows of h [n, d], a slice of the vocabulary at a time with a
    running maximum and sum (the online log-sum-exp): each slice of W is read once for all rows, and only
    [n, slice] logits exist at once. Exponentials of logits more than 80 below the running maximum are taken as
    exp(-80) (they add < 1e-30 to a sum >= 1): torch's CPU exp is many times slower in its underflow range."""
    wanted = wanted.to(weight.device)
    h = h.to(weight.device)
    n, vocab = h.shape[0], weight.shape[0]
    step = min(vocab, max(MIN_SLICE, CHUNK_VALUES // max(n, 1)))
    top = torch.full((n,), float("-inf"), device=h.device)
    total = torch.zeros(n, device=h.device)
    picked = torch.zeros(n, device=h.device)
    differentiable = torch.is_grad_enabled() and h.requires_grad
    for a in range(0, vocab, step):
        z = logits(F.linear(h, weight[a : a + step], None if bias is None else bias[a : a + step]))  # [n, slice]
        here = (wanted >= a) & (wanted < a + z.shape[1])
        at = (wanted - a).clamp(0, z.shape[1] - 1)[:, None]
        picked = picked + torch.where(here, z.gather(-1, at)[:, 0], 0.0)
        new_top = torch.maximum(top, z.detach().amax(-1))
        if differentiable:
            weights = (z - new_top[:, None]).clamp(min=UNDERFLOW).exp()
        else:  # in place: no second [n, slice] tensor
            weights = z.sub_(new_top[:, None]).clamp_(min=UNDERFLOW).exp_()
        total = total * torch.exp(top - new_top) + weights.sum(-1)
        top = new_top
    return top + total.log() - picked


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


def continuation_ids(tokenizer, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of a prompt (with special tokens) and of its continuation in context: the tokens of
    prompt + continuation after the prompt's own, when the prompt's tokens are a prefix of them (true for
    most tokenizers, including those that add a dummy space); else the continuation tokenized alone."""
    p = tokenizer(prompt)["input_ids"]
    full = tokenizer(prompt + continuation)["input_ids"]
    if full[: len(p)] == p and len(full) > len(p):
        return p, full[len(p) :]
    return p, tokenizer(continuation, add_special_tokens=False)["input_ids"]
