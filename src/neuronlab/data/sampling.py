"""Sampling many continuations of a few prompts with each prompt computed once (the concept sentences).

    new = sample_rows(model, rows, max_new_tokens=32, pad=pad, stop=[eos, newline], seed=0)

`rows` are token-id lists, many of them the same prompt (40 samples of one word's prompt). The distinct prompts are
left-padded together and run once, all but their last token; the key/value cache of that prefill is copied to every
row that shares the prompt (`Cache.batch_select_indices`), and `model.generate` samples from there: it computes only
the last prompt token and the new ones. The rows, the padding and the sampling are those of one `generate` call on
all the rows (the same seeded top-k sampling, the same stop tokens); only the repeated prefill is gone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import transformers

from neuronlab.data.batching import forward_takes, model_inputs

# the name of a key/value cache, in a model's output and generate's arguments: `cache` from transformers 5.x
CACHE = "cache" if int(transformers.__version__.split(".")[0]) >= 5 else "past_key_values"


def _left_padded(rows: Sequence[Sequence[int]], pad: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([[pad] * (width - len(r)) + list(r) for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def sample_rows(
    model,
    rows: Sequence[Sequence[int]],
    max_new_tokens: int,
    pad: int,
    stop: Sequence[int],
    seed: int,
    top_k: int = 50,
    shared: bool = True,
) -> list[list[int]]:
    """The new tokens of each row (stop tokens kept, padding after them dropped), top-k sampling seeded with `seed`;
    `shared=False` runs the prefill once per row (plain `generate` on every row, the reference)."""
    width = max(len(r) for r in rows)
    ids, mask = _left_padded(rows, pad, width)
    settings = dict(
        do_sample=True, top_k=top_k, max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=list(stop)
    )
    torch.manual_seed(seed)
    with torch.no_grad():
        if shared and width > 1:
            distinct = list(dict.fromkeys(tuple(r) for r in rows))
            where = {r: i for i, r in enumerate(distinct)}
            u_ids, u_mask = _left_padded(distinct, pad, width)
            u_ids, u_mask = u_ids[:, :-1], u_mask[:, :-1]
            extra = (
                {"position_ids": (u_mask.cumsum(-1) - 1).clamp(min=0)} if forward_takes(model, "position_ids") else {}
            )
            prefix = model(**model_inputs(model, u_ids, u_mask, **extra), use_cache=True)[
                CACHE
            ]  # positions as generate's
            prefix.batch_select_indices(torch.tensor([where[tuple(r)] for r in rows]))
            torch.manual_seed(seed)
            out = model.generate(**model_inputs(model, ids, mask), **{CACHE: prefix}, **settings)
        else:
            out = model.generate(**model_inputs(model, ids, mask), **settings)
    return [[t for t in row if t != pad] for row in out[:, width:].cpu().tolist()]
