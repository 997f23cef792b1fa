"""An ArchSpec for a model outside the table: found in its module tree, then proved on a probe forward.

    spec = derive_spec(model)        # candidates by shape and name, chosen by what the numbers say
    verify_spec(model, spec)         # [] or the identities that failed

Finding. The decoder layers are the ModuleList with `num_hidden_layers` entries; in layer 0 the attention block
and the FFN block are children named like `attn`/`attention` and `mlp`/`ffn`/`feed_forward` (or the layer holds
the FFN projections itself, as OPT does). Inside the FFN, the down projection is the Linear (or GPT-2 Conv1D)
from d_ff to d_model, the up/gate projections go from d_model to d_ff (2 d_ff: fused), the activation is the
parameter-free module between them. An FFN holding experts (3-D weights, an `experts` module) is a mixture of
experts: its block output, the attention and the residual stream are served, its neurons are not (a neuron of
expert e sees only the tokens routed to e; there is no one [batch, pos, d_ff] value to read). The block outputs
added to the residual stream and the final norm are chosen among the candidates (the block, its last
projection, a post-norm) by the identities below.

Proving (`verify_spec`, through the same hooks every method uses), on 2 x 7 seeded token ids:
  1. resid(l) equals Hugging Face's `hidden_states[l + 1]` (the last layer: before or after the final norm);
  2. hidden_states[l] + attn_out(l) + ffn_out(l) equals resid(l);
  3. with every `neuron` of every layer set to zero, each layer's ffn_out is the same for every token (the down
     projection is the only way from the neurons to the residual stream), and act and neuron have d_ff values;
  4. the unembedding of the final norm's output, soft-capped where the family caps, equals the model's logits.
Tolerance: 1e-4 of the largest value compared (float32), 3e-2 in 16-bit dtypes.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import fields

import torch
from torch import Tensor, nn

from neuronlab.errors import NeuronlabError
from neuronlab.models.arch import ArchSpec, text_config
from neuronlab.models.sites import get_module, module_device

ATTN = re.compile(r"att", re.I)
FFN = re.compile(r"mlp|ffn|feed_?forward|moe", re.I)
ACT = re.compile(r"act|gelu|silu|relu|swish|swiglu|tanh|sigmoid|mish|glu", re.I)
POSITIONS = ("max_position_embeddings", "n_positions", "n_ctx", "seq_length")


def _is_norm(name: str, module: nn.Module) -> bool:
    last = name.rsplit(".", 1)[-1].lower()
    return bool(re.search(r"norm$", type(module).__name__, re.I) or re.search(r"norm|^ln(_|$)", last))


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


def _find_layers(model: nn.Module, n_layers: int | None) -> str:
    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    fitting = [n for n, m in lists if n_layers is None or len(m) == n_layers]
    fitting = [
        n
        for n in fitting
        if any(FFN.search(c) or ATTN.search(c) for c, _ in model.get_submodule(n)[0].named_children())
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


def _candidates(model: nn.Module) -> dict:
    """Module paths for every role, several where the numbers must decide (first = preferred)."""
    config = text_config(model)
    d_model = getattr(config, "hidden_size", None) or model.get_input_embeddings().weight.shape[1]
    layers_path = _find_layers(model, getattr(config, "num_hidden_layers", None))
    layers = model.get_submodule(layers_path)
    layer = layers[0]
    children = dict(layer.named_children())
    blocks = {n: m for n, m in children.items() if any(True for _ in m.parameters()) and not _is_norm(n, m)}
    attn = next((n for n in blocks if ATTN.search(n)), None)
    ffn = next((n for n in blocks if FFN.search(n)), None)
    if attn is None:
        raise NeuronlabError(
            f"layer {type(layer).__name__} has no attention block (a child named like attn or "
            f"attention among {', '.join(children)}): not a transformer decoder layer"
        )
    box = layer.get_submodule(ffn) if ffn else layer
    prefix = f"{ffn}." if ffn else ""
    inside = {n: m for n, m in box.named_modules() if n and not (not ffn and (n == attn or n.startswith(attn + ".")))}
    if not ffn and not any(_linear_io(m) for m in inside.values()):
        raise NeuronlabError(
            f"layer {type(layer).__name__} has no FFN block (a child named like mlp, ffn or "
            f"feed_forward among {', '.join(children)})"
        )
    out = {
        "layers": layers_path,
        "act": None,
        "down": None,
        "up": None,
        "gate": None,
        "fused": False,
        "conv1d": False,
        "router": None,
    }
    moe = [lay.get_submodule(ffn) for lay in layers if ffn and _has(lay, ffn)]
    moe = [block for block in moe if _is_moe(block, config)]
    if moe:  # any layer; the router is read off the first expert layer (DeepSeek's first layers are dense)
        out["router"] = next(
            (
                prefix + n
                for n, m in moe[0].named_children()
                if re.search(r"gate$|router", n) and any(True for _ in m.parameters())
            ),
            None,
        )
    else:
        proj = {n: _linear_io(m) for n, m in inside.items() if _linear_io(m)}
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
        out["gate"] = prefix + gates[0] if gates and len(ups) == 2 else None
        plain = [n for n in ups if prefix + n != out["gate"]]
        if plain:
            out["up"] = prefix + plain[0]
            out["fused"] = proj[plain[0]][1] == 2 * d_ff and out["gate"] is None
        acts = [
            n
            for n, m in inside.items()
            if not list(m.children())
            and not _linear_io(m)
            and ACT.search(type(m).__name__ + " " + n.rsplit(".", 1)[-1])
            and "dropout" not in n.lower()
        ]
        out["act"] = prefix + min(acts, key=lambda n: n.count(".")) if acts else None
        out["down"] = prefix + down
        out["conv1d"] = type(inside[down]).__name__ == "Conv1D"
    att_mod = layer.get_submodule(attn)
    att_proj = [n for n, m in att_mod.named_modules() if n and (_linear_io(m) or (0, 0))[1] == d_model]
    norms = [n for n, m in children.items() if _is_norm(n, m)]
    out["attn_out"] = [
        p
        for p in [attn] + ([f"{attn}.{att_proj[-1]}"] if att_proj else []) + norms
        if all(_has(lay, p) for lay in layers)
    ]
    out["ffn_out"] = [
        p
        for p in ([ffn] if ffn else []) + ([out["down"]] if out["down"] else []) + norms
        if all(_has(lay, p) for lay in layers)
    ]
    inside_layers = {id(m) for m in layers.modules()}
    out["final_norm"] = [
        n
        for n, m in model.named_modules()
        if n and id(m) not in inside_layers and _is_norm(n, m) and not list(m.children())
    ][::-1]
    unembed = model.get_output_embeddings()
    if unembed is None:
        raise NeuronlabError(f"{type(model).__name__} has no output embeddings (get_output_embeddings() is None)")
    out["unembed"] = _path(model, unembed)
    return out


def _probe(model: nn.Module) -> dict:
    vocab = model.get_input_embeddings().weight.shape[0]
    gen = torch.Generator().manual_seed(0)
    device = module_device(model.get_input_embeddings())
    ids = torch.randint(min(3, vocab - 1), vocab, (2, 7), generator=gen).to(device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@contextmanager
def _capture(model: nn.Module, paths: dict[str, str], inputs: tuple[str, ...] = ()):
    """{key: output (or input, for keys in `inputs`) of the module at path} for one forward pass; hooks removed
    after."""
    seen: dict[str, Tensor] = {}
    handles = []

    def keep(key):
        def hook(_m, args, output):
            value = args[0] if key in inputs else output
            value = value[0] if isinstance(value, tuple) else value
            if isinstance(value, Tensor):
                seen[key] = value.detach().clone()  # a copy: some layers add to a block's output in place (Falcon)

        return hook

    try:
        for key, path in paths.items():
            handles.append(get_module(model, path).register_forward_hook(keep(key)))
        yield seen
    finally:
        for h in handles:
            h.remove()


def _like(a: Tensor, b: Tensor) -> Tensor:
    """`a` in the shape of `b` where it holds the same tokens flattened (an FFN on [batch * pos, width], OPT)."""
    return a.view(b.shape) if a.shape != b.shape and a.dim() == 2 and a.numel() == b.numel() else a


def _close(a: Tensor, b: Tensor, tol: float) -> bool:
    a = _like(a, b)
    if a.shape != b.shape:
        return False
    a, b = a.double(), b.double()
    scale = max(float(a.abs().max()), float(b.abs().max()), 1e-6)
    return float((a - b).abs().max()) <= tol * scale


def _tol(model: nn.Module) -> float:
    return 1e-4 if next(model.parameters()).dtype == torch.float32 else 3e-2


def _adds_up(h: Tensor, attn: Tensor, ffn: Tensor, resid: Tensor, tol: float) -> bool:
    """h + attn + ffn == resid (False where the shapes do not fit)."""
    attn, ffn = _like(attn, h), _like(ffn, h)
    return attn.shape == ffn.shape == h.shape == resid.shape and _close(h + attn + ffn, resid, tol)


def derive_spec(model: nn.Module) -> ArchSpec:
    """The ArchSpec of `model` from its module tree, the block outputs and final norm chosen by one probe forward.
    Raises NeuronlabError naming what was not found; `verify_spec` proves the result."""
    c = _candidates(model)
    n = len(model.get_submodule(c["layers"]))
    paths = {
        f"{role}:{layer}:{p}": f"{c['layers']}.{layer}.{p}"
        for role in ("attn_out", "ffn_out")
        for p in c[role]
        for layer in range(n)
    }
    paths |= {f"norm:{p}": p for p in c["final_norm"]} | {"unembed": c["unembed"]}
    if c["down"]:  # its input tells a flat FFN ([batch * pos, d_ff], OPT) in the same forward
        paths["down_in"] = f"{c['layers']}.0.{c['down']}"
    with _capture(model, paths, inputs=("unembed", "down_in")) as seen, torch.no_grad():
        hs = model(**_probe(model), output_hidden_states=True, use_cache=False).hidden_states
    tol, chosen = _tol(model), None
    for a in c["attn_out"]:
        for f in c["ffn_out"]:
            if a == f or any(f"attn_out:{i}:{a}" not in seen or f"ffn_out:{i}:{f}" not in seen for i in range(n)):
                continue
            if all(
                _adds_up(hs[i], seen[f"attn_out:{i}:{a}"], seen[f"ffn_out:{i}:{f}"], hs[i + 1], tol)
                for i in range(n - 1)
            ):
                chosen = (a, f)
                break
        if chosen:
            break
    if chosen is None:
        raise NeuronlabError(
            f"no pair of attention ({', '.join(c['attn_out'])}) and FFN ({', '.join(c['ffn_out'])}) "
            "outputs adds up to the next hidden state: the layer is not h + attn + ffn (a "
            "post-norm or scaled residual)"
        )
    norm = next(
        (
            p
            for p in c["final_norm"]
            if f"norm:{p}" in seen and "unembed" in seen and _close(seen[f"norm:{p}"], seen["unembed"], tol)
        ),
        None,
    )
    if norm is None:
        raise NeuronlabError(
            f"none of the norms outside the layers ({', '.join(c['final_norm']) or 'none'}) feeds the unembedding"
        )
    config = text_config(model)
    return ArchSpec(
        layers=c["layers"],
        act=c["act"],
        down=c["down"],
        ffn_out=chosen[1],
        attn_out=chosen[0],
        final_norm=norm,
        unembed=c["unembed"],
        up=c["up"],
        gate=c["gate"],
        fused_gate_up=c["fused"],
        conv1d=c["conv1d"],
        softcap="final_logit_softcapping" if hasattr(config, "final_logit_softcapping") else None,
        max_positions=next((k for k in POSITIONS if isinstance(getattr(config, k, None), int)), None),
        router=c["router"],
        flat_ffn="down_in" in seen and seen["down_in"].dim() == 2,
        logit_scale="logit_scale" if isinstance(getattr(config, "logit_scale", None), (int, float)) else None,
    )


def verify_spec(model: nn.Module, spec: ArchSpec) -> list[str]:
    """The identities of the module docstring that fail for `spec` on `model` (empty: every site is proven)."""
    from neuronlab.models.sites import Site, decoder_layers, down_weight_io, hooked, trace

    n = len(decoder_layers(model, spec))
    tol, failed, probe = _tol(model), [], _probe(model)
    kinds = ["resid", "attn_out", "ffn_out"] + (["neuron"] if spec.down else []) + (["act"] if spec.act else [])
    sites = [Site(i, k) for i in range(n) for k in kinds]
    head = {"norm": spec.final_norm, "unembed": spec.unembed, "unembed_in": spec.unembed}
    with trace(model, sites, arch=spec) as tr, _capture(model, head, inputs=("unembed_in",)) as out, torch.no_grad():
        res = model(**probe, output_hidden_states=True, use_cache=False)
    hs = res.hidden_states
    if tr.missing():
        return [f"sites never ran: {', '.join(map(str, tr.missing()[:4]))}"]
    for i in range(n):
        resid = tr[Site(i, "resid")]
        if not (_close(resid, hs[i + 1], tol) or (i == n - 1 and _close(out.get("norm", resid), hs[i + 1], tol))):
            failed.append(f"resid({i}) is not hidden_states[{i + 1}]")
        if not _adds_up(hs[i], tr[Site(i, "attn_out")], tr[Site(i, "ffn_out")], resid, tol):
            failed.append(f"hidden_states[{i}] + attn_out({i}) + ffn_out({i}) is not resid({i})")
    if spec.down:
        d_ff = down_weight_io(model, spec)[0]
        for i in range(n):
            for k in ("act", "neuron") if spec.act else ("neuron",):
                if tr[Site(i, k)].shape[-1] != d_ff:
                    failed.append(f"{k}({i}) has {tr[Site(i, k)].shape[-1]} values, the down projection takes {d_ff}")
        zero = {Site(i, "neuron"): (lambda h: torch.zeros_like(h)) for i in range(n)}
        outs = [Site(i, "ffn_out") for i in range(n)]
        with hooked(model, zero, spec), trace(model, outs, arch=spec) as z, torch.no_grad():
            model(**probe, use_cache=False)
        for i in range(n):
            v = z[Site(i, "ffn_out")].flatten(0, -2)
            if not _close(v, v[:1].expand_as(v), tol):
                failed.append(
                    f"with every neuron of layer {i} at zero, ffn_out({i}) still depends on the token: "
                    f"{spec.down!r} is not the only path from the neurons"
                )
    logits = out.get("unembed")
    if logits is not None:
        logits = spec.logits(text_config(model), logits)
    fed = "norm" in out and "unembed_in" in out and _close(out["norm"], out["unembed_in"], tol)
    if logits is None or not fed or not _close(logits, res.logits, tol):
        failed.append(f"{spec.unembed}({spec.final_norm}(...)) is not the model's logits (the logit lens would be off)")
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
