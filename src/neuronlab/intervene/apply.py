"""apply: run a model with a Plan's interventions in place, inside a context manager only.

    with nl.apply(model, plan):
        logits = model(**batch).logits
        out = model.generate(**prompt, max_new_tokens=20)

Hooks are installed on entry and removed on exit, also when the block raises. An empty plan installs
nothing, so logits are bit-identical to the model's own. Every layer, neuron index and value shape is
checked before anything runs. See `plan.py` for how positions are counted while generating.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from neuronlab.errors import NeuronlabError
from neuronlab.intervene.plan import Intervention, Plan
from neuronlab.models.load import require_same_model
from neuronlab.models.sites import Site, decoder_layers, hooked, module_device, site_width
from neuronlab.select.neuron_set import NeuronSet

CACHE_ARGUMENTS = ("cache", "past_key_values")  # transformers >= 5.24 names the KV cache `cache`, older ones the other


def cached_tokens(args: tuple, kwargs: dict) -> int:
    """How many tokens of the sequence a forward call of a causal LM continues (0 without a KV cache).

    Read, in this order, from what transformers passes: `cache_position` (<= 5.23), the cache's own length (under
    either name; `get_seq_length()` or a legacy tuple of (key, value) tensors), a 2-d attention mask that covers
    the cached and the new tokens (what `generate` passes), then `position_ids` (their largest first entry: a row
    without left padding counts from 0). A cache whose length none of these tells is refused, never taken as 0."""
    position = kwargs.get("cache_position")
    if isinstance(position, Tensor) and position.numel():
        return int(position.reshape(-1)[0])
    cache = next((kwargs[name] for name in CACHE_ARGUMENTS if kwargs.get(name) is not None), None)
    if cache is None:
        return 0
    if hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length())
    if isinstance(cache, (tuple, list)) and cache and isinstance(cache[0], (tuple, list)) and cache[0]:
        return int(cache[0][0].shape[-2])  # legacy format: per layer (key [batch, heads, pos, dim], value)
    ids = kwargs.get("input_ids", args[0] if args else None)
    mask, positions = kwargs.get("attention_mask"), kwargs.get("position_ids")
    if isinstance(ids, Tensor) and isinstance(mask, Tensor) and mask.dim() == 2 and mask.shape[1] >= ids.shape[-1]:
        return mask.shape[1] - ids.shape[-1]
    if isinstance(positions, Tensor) and positions.numel():
        return int(positions.reshape(-1, positions.shape[-1])[:, 0].max())
    import transformers

    raise NeuronlabError(
        f"a forward call continues a KV cache ({type(cache).__name__}) whose length neuronlab cannot read on "
        f"transformers {transformers.__version__}, so positions of a plan cannot be counted: generate with "
        "use_cache=False, or use a transformers release the README names as tested (and report this)"
    )


class _Call:
    """What the current forward call looks like: tokens already in the KV cache and the attention mask."""

    offset: int = 0
    attention_mask: Tensor | None = None

    def pre_hook(self, _module, args, kwargs) -> None:
        self.offset = cached_tokens(args, kwargs)
        mask = kwargs.get("attention_mask")
        self.attention_mask = mask if isinstance(mask, Tensor) and mask.dim() == 2 else None

    def rows(self, positions, batch: int, length: int, device) -> Tensor | None:
        """bool [batch, length] of the positions to change in this call (None: all of them)."""
        if isinstance(positions, str) and positions == "all":
            return None
        if isinstance(positions, str):  # "last": the last real token of each row
            mask = self.attention_mask
            if mask is None or mask.shape[0] != batch:
                last = torch.full((batch,), length - 1, device=device)
            else:
                chunk = mask[:, -length:].to(device).bool()
                last = length - 1 - chunk.flip(-1).int().argmax(-1)
            return torch.arange(length, device=device)[None, :] == last[:, None]
        absolute = torch.arange(self.offset, self.offset + length, device=device)
        if isinstance(positions, slice):
            start, stop, step = positions.indices(self.offset + length)
            wanted = torch.zeros(self.offset + length, dtype=torch.bool, device=device)
            wanted[start:stop:step] = True
            return wanted[absolute][None, :].expand(batch, length)
        mask = positions.to(device)
        full = torch.zeros(*mask.shape[:-1], self.offset + length, dtype=torch.bool, device=device)
        n = min(mask.shape[-1], full.shape[-1])
        full[..., :n] = mask[..., :n]
        return full[..., absolute].expand(batch, length)

    def along(self, positions: slice, values: Tensor, length: int) -> tuple[Tensor, Tensor]:
        """Per-position `values` [n, ...] laid over this call's positions, aligned at the end of the slice:
        ([length, ...] values, bool [length] where a row exists)."""
        device = values.device
        chosen = torch.arange(self.offset + length, device=device)[positions]
        row = torch.full((self.offset + length,), -1, dtype=torch.long, device=device)
        row[chosen] = torch.arange(len(chosen), device=device) - len(chosen) + values.shape[0]
        row = row[self.offset :]
        return values[row.clamp(min=0)], row >= 0


def _site_hook(call: _Call, edits: list[tuple[Intervention, Tensor | None, float | Tensor]]):
    def hook(h: Tensor) -> Tensor:  # h: [batch, pos, width]
        functional = torch.is_grad_enabled()  # keep autograd's saved tensors intact (training learned scalars)
        for iv, idx, value in edits:
            rows = call.rows(iv.positions, h.shape[0], h.shape[1], h.device)
            if iv.per_position(value):
                assert isinstance(iv.positions, slice) and isinstance(value, Tensor) and rows is not None
                value, has = call.along(iv.positions, value, h.shape[1])
                value = value[:, None] if value.dim() == 1 else value  # one factor per position: [pos, 1]
                rows = rows & has[None, :]  # a slice: rows is a mask
            x = h if idx is None else h[..., idx]
            new = iv.edit(x, value, h)
            if rows is not None:
                new = torch.where(rows[..., None], new, x)
            new = new.to(h.dtype)
            if idx is None:
                h = new
            elif functional:
                h = h.index_copy(-1, idx, new)
            else:
                h[..., idx] = new
        return h

    return hook


def compile_plan(model: nn.Module, plan: Plan) -> dict[Site, list]:
    """Check a plan against `model` and resolve it to site -> [(intervention, index tensor, value)]."""
    layers = decoder_layers(model)
    n_layers = len(layers)
    out: dict[Site, list] = {}
    for iv in plan:
        if isinstance(iv.neurons, NeuronSet):  # same shapes, other weights: only the fingerprint tells
            require_same_model(iv.neurons.meta.get("model"), model, f"the neurons of {type(iv).__name__}")
        width = site_width(model, iv.site)
        for layer, idx in iv.targets(n_layers).items():
            if idx is not None and idx and idx[-1] >= width:
                raise NeuronlabError(
                    f"{type(iv).__name__} on layers.{layer}.{iv.site}: neuron index {idx[-1]} is out of range "
                    f"(that site has {width} values); was the neuron set made for another model?"
                )
            if idx is not None and not idx:
                continue
            value = iv.value_at(layer, width if idx is None else len(idx))
            device = module_device(layers[layer])
            if isinstance(value, Tensor):
                value = value.to(device)
            index = None if idx is None else torch.tensor(idx, dtype=torch.long, device=device)
            out.setdefault(Site(layer, iv.site), []).append((iv, index, value))
    return out


@contextmanager
def apply(model: nn.Module, plan: Plan | list[Intervention]) -> Iterator[None]:
    """Install the plan's hooks for the duration of the block; see module doc."""
    if not isinstance(plan, Plan):
        plan = Plan(list(plan))
    compiled = compile_plan(model, plan)
    if not compiled:
        yield
        return
    call = _Call()
    handle = model.register_forward_pre_hook(call.pre_hook, with_kwargs=True)
    try:
        with hooked(model, {site: _site_hook(call, edits) for site, edits in compiled.items()}):
            yield
    finally:
        handle.remove()
