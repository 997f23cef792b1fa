"""Scoring tokens: the log-likelihood of each chosen token under a model (one path for perplexity, continuations,
LSS and attribution), and the token ids of a continuation in context. Below record, select and evaluate, so that
all of them (and the contrast tasks of data/) score the same way.

    nll = token_nll(model, ids, mask, scored_tokens(mask))      # float32 [n]: every real token after the first
    prompt_ids, ids = continuation_ids(tok, "The capital of France is", " Paris")
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuronlab.data.batching import model_inputs, vocab_rows
from neuronlab.errors import NeuronlabError
from neuronlab.models.arch import ArchSpec, text_config
from neuronlab.models.resolve import arch_spec
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


def token_nll(model, input_ids: Tensor, attention_mask: Tensor, targets: Tensor) -> Tensor:
    """NLL in nats (float32 [n]) of each token where `targets` [batch, pos] is True, given the tokens before it, in
    the order of `targets.nonzero()` (position 0 has nothing before it and may not be a target).

    One path for every score (perplexity, continuations, LSS, attribution), at about the cost of one forward pass:
    the forward stops at the unembedding; only the n positions that predict a target are unembedded (no padding,
    no prompt positions), with the model's own logit scale and soft-cap (`ArchSpec.logits`, proven equal to the
    model's logits), in float32, a chunk at a time so that the logits of a whole batch never exist (see
    `_nll_by_vocabulary`). Gradients flow when enabled (attribution)."""
    if targets[:, 0].any():
        raise NeuronlabError("position 0 has no tokens before it: it cannot be scored")
    spec = arch_spec(model)
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


def continuation_ids(tokenizer, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of a prompt (with special tokens) and of its continuation in context: the tokens of
    prompt + continuation after the prompt's own, when the prompt's tokens are a prefix of them (true for
    most tokenizers, including those that add a dummy space); else the continuation tokenized alone."""
    p = tokenizer(prompt)["input_ids"]
    full = tokenizer(prompt + continuation)["input_ids"]
    if full[: len(p)] == p and len(full) > len(p):
        return p, full[len(p) :]
    return p, tokenizer(continuation, add_special_tokens=False)["input_ids"]
