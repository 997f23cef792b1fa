"""Proving an ArchSpec on a model: the identities every site must satisfy, checked on a probe forward through the
same hooks every method uses.

Proving (`verify_spec`, through the same hooks every method uses), on 2 x 7 seeded token ids:
  1. resid(l) equals Hugging Face's `hidden_states[l + 1]` (the last layer: before or after the final norm, and not
     compared where the spec serves no lens: the head's own transformation comes between);
  2. hidden_states[l] + attn_out(l) + ffn_out(l) equals resid(l) (where the spec names attn_out: a layer that is not
     h + attn + ffn has none);
  3. with every `neuron` of every layer set to zero, each layer's ffn_out is the same for every token, and the
     logits equal those of a forward whose ffn_out is set to that constant and whose neurons are left alone: ffn_out
     is the neurons' only way to the rest of the model. With the FFN's input projection (`up`) at zero, the neurons
     are the same for every token: they are the FFN's. act and neuron have d_ff values;
  4. where the spec serves the lens: the unembedding's output, scaled and soft-capped where the family does, equals
     the model's logits, and the final norm (if any) takes the last layer's output and feeds the unembedding.
Tolerance: 1e-4 of the largest value compared (float32), 3e-2 in 16-bit dtypes.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import fields
from typing import Any

import torch
from torch import Tensor, nn

from neuronlab.models.arch import ArchSpec, text_config
from neuronlab.models.hooks import Site, down_io_by, get_module, hooked_by, layers_by, module_device, trace_by


def probe_inputs(model: Any) -> dict:
    vocab = model.get_input_embeddings().weight.shape[0]
    gen = torch.Generator().manual_seed(0)
    device = module_device(model.get_input_embeddings())
    ids = torch.randint(min(3, vocab - 1), vocab, (2, 7), generator=gen).to(device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@contextmanager
def capture(model: nn.Module, paths: dict[str, str], inputs: tuple[str, ...] = ()):
    """{key: output (or input, for keys in `inputs`) of the module at path} for one forward pass; hooks removed
    after."""
    seen: dict[str, Tensor] = {}
    handles = []

    def keep(key):
        def hook(_m, args, kwargs, output):
            value = (args[0] if args else kwargs.get("hidden_states")) if key in inputs else output
            value = value[0] if isinstance(value, (tuple, list)) else value
            if isinstance(value, Tensor):
                seen[key] = value.detach().clone()  # a copy: some layers add to a block's output in place (Falcon)

        return hook

    try:
        for key, path in paths.items():
            handles.append(get_module(model, path).register_forward_hook(keep(key), with_kwargs=True))
        yield seen
    finally:
        for h in handles:
            h.remove()


def _like(a: Tensor, b: Tensor) -> Tensor:
    """`a` in the shape of `b` where it holds the same tokens flattened (an FFN on [batch * pos, width], OPT)."""
    return a.view(b.shape) if a.shape != b.shape and a.dim() == 2 and a.numel() == b.numel() else a


def close(a: Tensor, b: Tensor, tol: float) -> bool:
    a = _like(a, b)
    if a.shape != b.shape:
        return False
    a, b = a.double(), b.double()
    scale = max(float(a.abs().max()), float(b.abs().max()), 1e-6)
    return float((a - b).abs().max()) <= tol * scale


def tolerance(model: nn.Module) -> float:
    return 1e-4 if next(model.parameters()).dtype == torch.float32 else 3e-2


def adds_up(h: Tensor, attn: Tensor, ffn: Tensor, resid: Tensor, tol: float) -> bool:
    """h + attn + ffn == resid (False where the shapes do not fit)."""
    attn, ffn = _like(attn, h), _like(ffn, h)
    return attn.shape == ffn.shape == h.shape == resid.shape and close(h + attn + ffn, resid, tol)


def _same_for_every_token(value: Tensor, tol: float) -> bool:
    v = value.flatten(0, -2)
    return close(v, v[:1].expand_as(v), tol)


def _constant(row: Tensor):
    """A hook that sets every token's value to `row`."""
    return lambda h: row.expand_as(h).clone()


def verify_spec(model: nn.Module, spec: ArchSpec) -> list[str]:
    """The identities of the module docstring that fail for `spec` on `model` (empty: every site is proven)."""
    n = len(layers_by(model, spec))
    tol, failed, probe = tolerance(model), [], probe_inputs(model)
    kinds = ["resid", "ffn_out"] + (["attn_out"] if spec.attn_out else [])
    kinds += (["neuron"] if spec.down else []) + (["act"] if spec.act else [])
    sites = [Site(i, k) for i in range(n) for k in kinds]
    head = {"unembed": spec.unembed, "unembed_in": spec.unembed}
    head |= {"norm": spec.final_norm, "norm_in": spec.final_norm} if spec.final_norm else {}
    inputs = ("unembed_in", "norm_in")
    with trace_by(model, spec, sites) as tr, capture(model, head, inputs=inputs) as out, torch.no_grad():
        res = model(**probe, output_hidden_states=True, use_cache=False)
    hs = res.hidden_states
    if tr.missing():
        return [f"sites never ran: {', '.join(map(str, tr.missing()[:4]))}"]
    for i in range(n):
        resid = tr[Site(i, "resid")]
        final = i == n - 1 and (close(out.get("norm", resid), hs[i + 1], tol) or not spec.lens)  # HF: after a norm
        if not (close(resid, hs[i + 1], tol) or final):
            failed.append(f"resid({i}) is not hidden_states[{i + 1}]")
        if spec.attn_out and not adds_up(hs[i], tr[Site(i, "attn_out")], tr[Site(i, "ffn_out")], resid, tol):
            failed.append(f"hidden_states[{i}] + attn_out({i}) + ffn_out({i}) is not resid({i})")
    if spec.down:
        d_ff = down_io_by(model, spec)[0]
        for i in range(n):
            for k in ("act", "neuron") if spec.act else ("neuron",):
                if tr[Site(i, k)].shape[-1] != d_ff:
                    failed.append(f"{k}({i}) has {tr[Site(i, k)].shape[-1]} values, the down projection takes {d_ff}")
        zero = {Site(i, "neuron"): (lambda h: torch.zeros_like(h)) for i in range(n)}
        outs = [Site(i, "ffn_out") for i in range(n)]
        with hooked_by(model, spec, zero), trace_by(model, spec, outs) as z, torch.no_grad():
            zeroed = model(**probe, use_cache=False).logits
        for i in range(n):
            if not _same_for_every_token(z[Site(i, "ffn_out")], tol):
                failed.append(
                    f"with every neuron of layer {i} at zero, ffn_out({i}) still depends on the token: "
                    f"{spec.down!r} is not the only path from the neurons"
                )
        if spec.attn_out is None and not spec.up:
            failed.append(
                "a layer that is not h + attn + ffn needs the FFN's input projection (up) to prove its neurons"
            )
        if spec.up and not failed:  # the neurons are the FFN's: they come from its input projection
            layers, handles = layers_by(model, spec), []
            zero_up = lambda _m, _a, out: torch.zeros_like(out)  # noqa: E731
            try:
                for i in range(n):
                    handles.append(get_module(layers[i], spec.up).register_forward_hook(zero_up))
                with trace_by(model, spec, [Site(i, "neuron") for i in range(n)]) as u, torch.no_grad():
                    model(**probe, use_cache=False)
            finally:
                for h in handles:
                    h.remove()
            for i in range(n):
                if not _same_for_every_token(u[Site(i, "neuron")], tol):
                    failed.append(
                        f"with the output of {spec.up!r} at zero, neuron({i}) still depends on the token: the neurons "
                        "are not the FFN's"
                    )
        if not failed:
            const = {s: _constant(z[s].flatten(0, -2)[0]) for s in outs}
            with hooked_by(model, spec, const), torch.no_grad():
                if not close(model(**probe, use_cache=False).logits, zeroed, tol):
                    failed.append(
                        f"the neurons reach the logits other than through ffn_out ({spec.ffn_out!r}): setting it to "
                        "its value at zero neurons is not the same as zeroing them"
                    )
    logits = out.get("unembed")
    if spec.lens and (logits is None or not close(spec.logits(text_config(model), logits), res.logits, tol)):
        failed.append(
            f"{spec.unembed}, scaled and capped as the spec says, does not give the model's logits (a head that "
            "does more: lens=False)"
        )
    last = tr[Site(n - 1, "resid")]
    if spec.final_norm:
        fed = {"norm", "norm_in", "unembed_in"} <= set(out) and close(out["norm"], out["unembed_in"], tol)
        fed = fed and close(out["norm_in"], last, tol)
    else:
        fed = "unembed_in" in out and close(out["unembed_in"], last, tol)
    if spec.lens and not fed:
        failed.append(
            f"{spec.unembed}({spec.final_norm or ''}(last layer's output)) is not the model's logits (the logit lens "
            "would be off)"
        )
    return failed


def spec_code(spec: ArchSpec) -> str:
    """`spec` as Python to paste: nl.ArchSpec(...) with the required fields and those that differ from the default."""
    from dataclasses import MISSING

    parts = [
        f"{f.name}={getattr(spec, f.name)!r}"
        for f in fields(spec)
        if f.default is MISSING or getattr(spec, f.name) != f.default
    ]
    return "nl.ArchSpec(" + ", ".join(parts) + ")"
