"""An ArchSpec for a model outside the table: found in its module tree, then proved on a probe forward.

    spec = derive_spec(model)        # candidates by shape and name, chosen by what the numbers say
    verify_spec(model, spec)         # [] or the identities that failed (models/verify.py)

Finding. The decoder layers are the ModuleList with `num_hidden_layers` entries; in each layer the token mixer and
the FFN block are children named like `attn`/`attention` and `mlp`/`ffn`/`feed_forward` (by class name where the
name says nothing; or the layer holds the FFN projections itself, as OPT does). Inside the FFN, the down
projection is the Linear (or GPT-2 Conv1D) from d_ff to d_model, the up/gate projections go from d_model to d_ff
(2 d_ff: fused), the activation is the parameter-free module between them. An FFN holding experts is a mixture of
experts: its block is served, its expert neurons through `models/moe.py`. The block outputs added to the residual
stream are chosen among the candidates (the block, its last projection, a post-norm; a hybrid's mixers of several
names, `self_attn|mamba`) by the identities; where none adds up the layer is not h + attn + ffn, and the FFN's down
projection is served alone (attn_out None). The head: `models/head.py`.

Proving: `neuronlab.models.verify`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor, nn

from neuronlab.errors import NeuronlabError
from neuronlab.models.arch import ArchSpec, text_config
from neuronlab.models.head import head_candidates, is_norm, with_factors
from neuronlab.models.verify import adds_up, capture, close, probe_inputs, tolerance

ATTN = re.compile(r"att", re.I)
FFN = re.compile(r"mlp|ffn|feed_?forward|moe", re.I)
ACT = re.compile(r"act|gelu|silu|relu|swish|swiglu|tanh|sigmoid|mish|glu", re.I)
POSITIONS = ("max_position_embeddings", "n_positions", "n_ctx", "seq_length")


def _has(root: nn.Module, path: str) -> bool:
    try:
        root.get_submodule(path)
    except AttributeError:
        return False
    return True


def _linear_io(module: nn.Module) -> tuple[int, int] | None:
    """(in, out) of a module that is a projection (a 2-D `weight`), else None."""
    from transformers.pytorch_utils import Conv1D

    w = getattr(module, "weight", None)
    if (
        not isinstance(w, Tensor)
        or w.dim() != 2
        or isinstance(module, nn.Embedding)
        or "norm" in type(module).__name__.lower()
    ):
        return None
    return (w.shape[0], w.shape[1]) if isinstance(module, Conv1D) else (w.shape[1], w.shape[0])


def _path(root: nn.Module, target: nn.Module) -> str:
    for name, module in root.named_modules():
        if module is target:
            return name
    raise NeuronlabError(f"{type(target).__name__} is not a submodule of {type(root).__name__}")


def _kind(text: str) -> str | None:
    """ "ffn", "attn" or None for the name of a decoder layer's child (or its class name)."""
    return "ffn" if FFN.search(text) else "attn" if ATTN.search(text) else None


def _blocks(layer: nn.Module) -> dict[str, nn.Module]:
    """A layer's children that hold parameters and are not norms: its token mixer(s) and FFN block(s)."""
    return {n: m for n, m in layer.named_children() if any(True for _ in m.parameters()) and not is_norm(n, m)}


def _kinds(layer: nn.Module) -> dict[str, str | None]:
    """{child: "ffn" | "attn" | None} for a layer's blocks, by their names; by their class names where the name tells
    nothing (NemotronH's `mixer`s), though never a second FFN (LFM2-MoE's conv block is an `Lfm2MoeShortConv`)."""
    blocks = _blocks(layer)
    kinds = {n: _kind(n) for n in blocks}
    named_ffn = "ffn" in kinds.values()
    for n, m in blocks.items():
        kind = _kind(type(m).__name__)
        kinds[n] = kinds[n] or (None if kind == "ffn" and named_ffn else kind)
    return kinds


def _find_layers(model: nn.Module, n_layers: int | None) -> str:
    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    fitting = [
        n
        for n, m in lists
        if (n_layers is None or len(m) == n_layers) and any(any(_kinds(layer).values()) for layer in m)
    ]
    if not fitting:
        raise NeuronlabError(f"no list of {n_layers} decoder layers with attention or FFN blocks found")
    return min(fitting, key=lambda n: n.count("."))


def _is_moe(ffn: nn.Module, config) -> bool:
    experts = any(
        getattr(config, k, 0) or 0 for k in ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
    )
    return (
        any(p.dim() >= 3 for p in ffn.parameters())
        or any("expert" in n for n, _ in ffn.named_modules())
        or (experts and any(isinstance(m, nn.ModuleList) for m in ffn.modules()))
    )


@dataclass
class Candidates:
    """Module paths for every role of an ArchSpec: one path, or several (first = preferred) where the probe forward
    must decide."""

    layers: str
    unembed: str = ""
    act: str | None = None
    down: str | None = None
    up: str | None = None
    gate: str | None = None
    fused: bool = False  # up and gate in one projection of 2 d_ff outputs
    conv1d: bool = False  # GPT-2's transposed weights
    router: str | None = None  # mixtures of experts: the router inside the FFN block
    attn_out: list[str] = field(default_factory=list)
    ffn_out: list[str] = field(default_factory=list)
    final_norm: list[str] = field(default_factory=list)


def _mixers(layers: nn.ModuleList, kids: list[dict[str, str | None]], ffn: str | None, d_model: int) -> list[str]:
    """attn_out candidates by name (`kids`: each layer's `_kinds`): the attention child every layer has and its last
    projection to d_model; the one token mixer each layer holds, attention or not (a hybrid's differing names as
    `self_attn|mamba`)."""
    attn = [[n for n, k in kind.items() if k == "attn"] for kind in kids]
    out = []
    if all(a and a[0] == attn[0][0] for a in attn):
        name = attn[0][0]
        proj = [n for n, m in layers[0].get_submodule(name).named_modules() if (_linear_io(m) or (0, 0))[1] == d_model]
        out += [name] + [f"{name}.{p}" for p in proj[-1:] if all(_has(lay, f"{name}.{p}") for lay in layers)]
    others = [[n for n, k in kind.items() if k != "ffn" and n != ffn] for kind in kids]
    if all(len(o) == 1 for o in others):  # one token mixer per layer, attention or not
        out.append("|".join(sorted({o[0] for o in others}, key=lambda n: (not ATTN.search(n), n))))
    return list(dict.fromkeys(out))


def _candidates(model: Any) -> Candidates:
    """Module paths for every role, several where the numbers must decide (first = preferred)."""
    config = text_config(model)
    d_model = getattr(config, "hidden_size", None) or model.get_input_embeddings().weight.shape[1]
    layers_path = _find_layers(model, getattr(config, "num_hidden_layers", None))
    layers = cast(nn.ModuleList, model.get_submodule(layers_path))
    layer = layers[0]
    children = dict(layer.named_children())
    kids = [_kinds(lay) for lay in layers]
    if not any("attn" in kinds.values() for kinds in kids):
        raise NeuronlabError(
            f"no layer of {type(layer).__name__} has an attention block (a child named like attn or attention among "
            f"{', '.join(children)}): not a transformer decoder"
        )
    ffns = [next((n for n, k in kinds.items() if k == "ffn"), None) for kinds in kids]
    if len(set(ffns)) > 1:
        have = [str(i) for i, f in enumerate(ffns) if f]
        names = ", ".join(sorted({f for f in ffns if f}))
        raise NeuronlabError(
            f"only layers {', '.join(have)} of {len(ffns)} hold an FFN block ({names}); the others are token mixers "
            "alone (mamba, attention): FFN sites on some layers only are not served yet"
            if None in ffns
            else f"the layers name their FFN blocks differently ({names}): give the model an ArchSpec of its own"
        )
    ffn = ffns[0]
    attn = next((n for n, k in kids[0].items() if k == "attn"), "")
    box = layer.get_submodule(ffn) if ffn else layer
    prefix = f"{ffn}." if ffn else ""
    inside = {n: m for n, m in box.named_modules() if n and not (not ffn and (n == attn or n.startswith(attn + ".")))}
    if not ffn and not any(_linear_io(m) for m in inside.values()):
        raise NeuronlabError(
            f"layer {type(layer).__name__} has no FFN block (a child named like mlp, ffn or "
            f"feed_forward among {', '.join(children)})"
        )
    out = Candidates(layers=layers_path)
    moe = [lay.get_submodule(ffn) for lay in layers if ffn and _has(lay, ffn)]
    moe = [block for block in moe if _is_moe(block, config)]
    if moe:  # any layer; the router is read off the first expert layer (DeepSeek's first layers are dense)
        out.router = next(
            (
                prefix + n
                for n, m in moe[0].named_children()
                if re.search(r"gate$|router", n) and any(True for _ in m.parameters())
            ),
            None,
        )
    else:
        proj = {n: io for n, m in inside.items() if (io := _linear_io(m)) is not None}
        downs = [n for n, (i, o) in proj.items() if o == d_model and i != d_model]
        if len(downs) != 1:
            raise NeuronlabError(
                f"cannot tell the FFN down projection (d_ff -> {d_model}) of {type(box).__name__}: "
                f"candidates {downs or 'none'} among {', '.join(proj) or 'no projections'}"
            )
        down = downs[0]
        d_ff = proj[down][0]
        ups = [n for n, (i, o) in proj.items() if i == d_model and o in (d_ff, 2 * d_ff)]
        gates = [n for n in ups if re.search(r"gate|w1$", n)]
        out.gate = prefix + gates[0] if gates and len(ups) == 2 else None
        plain = [n for n in ups if prefix + n != out.gate]
        if plain:
            out.up = prefix + plain[0]
            out.fused = proj[plain[0]][1] == 2 * d_ff and out.gate is None
        acts = [
            n
            for n, m in inside.items()
            if not list(m.children())
            and not _linear_io(m)
            and ACT.search(type(m).__name__ + " " + n.rsplit(".", 1)[-1])
            and "dropout" not in n.lower()
        ]
        out.act = prefix + min(acts, key=lambda n: n.count(".")) if acts else None
        if out.act and len({id(lay.get_submodule(out.act)) for lay in layers if _has(lay, out.act)}) < len(layers):
            out.act = None  # one activation module shared by every layer (GPT-1): its hook could not tell them
        out.down = prefix + down
        out.conv1d = type(inside[down]).__name__ == "Conv1D"
    lost = [p for p in (out.down, out.up, out.gate, out.act) if p and not all(_has(lay, p) for lay in layers)]
    if lost:
        raise NeuronlabError(
            f"the FFN projection {lost[0]!r} found in layer 0 is not in every layer (no block named like mlp, ffn or "
            "feed_forward in each): FFN sites on some layers only are not served yet"
        )
    norms = [n for n, m in children.items() if is_norm(n, m)]
    out.attn_out = _mixers(layers, kids, ffn, d_model) + [p for p in norms if all(_has(lay, p) for lay in layers)]
    out.ffn_out = [
        p
        for p in ([ffn] if ffn else []) + ([out.down] if out.down else []) + norms
        if all(_has(lay, p) for lay in layers)
    ]
    unembed = model.get_output_embeddings()
    if unembed is None:
        raise NeuronlabError(f"{type(model).__name__} has no output embeddings (get_output_embeddings() is None)")
    out.unembed = _path(model, unembed)
    out.final_norm = head_candidates(model, layers, unembed)
    return out


def derive_spec(model: nn.Module) -> ArchSpec:
    """The ArchSpec of `model` from its module tree, the block outputs and final norm chosen by one probe forward.
    Raises NeuronlabError naming what was not found; `verify_spec` proves the result."""
    c = _candidates(model)
    n = len(cast(nn.ModuleList, model.get_submodule(c.layers)))
    paths = {
        f"{role}:{layer}:{p}": "|".join(f"{c.layers}.{layer}.{q}" for q in p.split("|"))
        for role in ("attn_out", "ffn_out")
        for p in getattr(c, role)
        for layer in range(n)
    }
    paths |= {f"{k}:{p}": p for p in c.final_norm for k in ("norm", "norm_in")}
    paths |= {"unembed": c.unembed, "head": c.unembed} | {f"resid:{i}": f"{c.layers}.{i}" for i in range(n)}
    if c.down:  # its input tells a flat FFN ([batch * pos, d_ff], OPT) in the same forward
        paths["down_in"] = f"{c.layers}.0.{c.down}"
    inputs = ("unembed", "down_in", *(f"norm_in:{p}" for p in c.final_norm))
    with capture(model, paths, inputs=inputs) as seen, torch.no_grad():
        res = model(**probe_inputs(model), output_hidden_states=True, use_cache=False)
    hs, tol = res.hidden_states, tolerance(model)
    missing = [k for k in ("unembed", "head", *(f"resid:{i}" for i in range(n))) if k not in seen]
    if missing:
        raise NeuronlabError(
            f"the probe forward did not show {missing[0]} as a tensor (a head applied without its module, or a "
            "layer whose output is not the hidden state)"
        )
    pairs = [
        (a, f)
        for a in c.attn_out
        for f in c.ffn_out
        if a != f and all(f"attn_out:{i}:{a}" in seen and f"ffn_out:{i}:{f}" in seen for i in range(n))
    ]
    chosen: tuple[str | None, str] | None = next(
        (
            (a, f)
            for a, f in pairs
            if all(
                adds_up(hs[i], seen[f"attn_out:{i}:{a}"], seen[f"ffn_out:{i}:{f}"], seen[f"resid:{i}"], tol)
                for i in range(n)
            )
        ),
        None,
    )
    if chosen is None:  # not h + attn + ffn: the FFN's own output is still served, where verify proves it
        ffn_out = c.down or next((f for f in c.ffn_out if "." not in f and f not in c.attn_out), None)
        if ffn_out is None:
            raise NeuronlabError(
                f"no pair of attention ({', '.join(c.attn_out)}) and FFN ({', '.join(c.ffn_out)}) outputs adds up to "
                "the next hidden state, and there is no FFN block or down projection to serve on its own"
            )
        chosen = (None, ffn_out)
    heads = [p for p in c.final_norm if {f"norm:{p}", f"norm_in:{p}"} <= set(seen)]
    norm = next(
        (
            p
            for p in heads
            if close(seen[f"norm:{p}"], seen["unembed"], tol)
            and close(seen[f"norm_in:{p}"], seen[f"resid:{n - 1}"], tol)
        ),
        None,
    )
    lens = norm is not None or close(seen["unembed"], seen[f"resid:{n - 1}"], tol)  # else: the head does more (no lens)
    config = text_config(model)
    spec = ArchSpec(
        layers=c.layers,
        act=c.act,
        down=c.down,
        ffn_out=chosen[1],
        attn_out=chosen[0],
        final_norm=norm,
        lens=lens,
        unembed=c.unembed,
        up=c.up,
        gate=c.gate,
        fused_gate_up=c.fused,
        conv1d=c.conv1d,
        softcap=next((k for k in ("final_logit_softcapping", "logits_soft_cap") if hasattr(config, k)), None),
        max_positions=next((k for k in POSITIONS if isinstance(getattr(config, k, None), int)), None),
        router=c.router,
        flat_ffn="down_in" in seen and seen["down_in"].dim() == 2,
    )
    return with_factors(spec, config, seen["head"], res.logits, tol)
