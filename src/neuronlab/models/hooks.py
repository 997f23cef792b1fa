"""Sites and hooks, given a model and its ArchSpec: the primitives that `sites.py` (which resolves the spec) and the
proof of a spec (`verify.py`, which holds a candidate) share. Methods use `neuronlab.models.sites`.

    spec = ARCH_SPECS["llama"]
    with hooked_by(model, spec, {Site(3, "act"): lambda h: print(h.shape)}):   # h: [batch, pos, d_ff]
        model(**batch)

Kinds (see DESIGN.md): `act` the FFN activation output, `neuron` the input of the down projection,
`ffn_out` / `attn_out` the block outputs added to the residual stream, `resid` the residual stream after
the layer, and on a mixture of experts `router` (read-only): the weight the layer gives each expert's output for
the token, 0 for experts not chosen, so in `record` active / tokens is how often expert e is used. A hook
function gets the value and returns a replacement, or None to leave it as it is
(it may change it in place). Hooks exist only inside `hooked_by`, which removes them in `finally`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, cast, get_args

import torch
from torch import Tensor, nn

from neuronlab.errors import NeuronlabError
from neuronlab.models.arch import ArchSpec, text_config

SiteKind = Literal["act", "neuron", "ffn_out", "attn_out", "resid", "router"]
KINDS: tuple[str, ...] = get_args(SiteKind)
NEURON_KINDS = ("act", "neuron")  # width d_ff; router: the number of experts; the other kinds have width d_model


def check_kind(kind: str, allowed: tuple[str, ...] = KINDS) -> None:
    """One error for a site kind that is not one of `allowed` (every kind, by default)."""
    if kind not in allowed:
        raise NeuronlabError(f"unknown site kind {kind!r}: use one of {', '.join(allowed)}")


@dataclass(frozen=True, order=True)
class Site:
    """A layer index and a kind; canonical string form `layers.12.act`."""

    layer: int
    kind: str

    def __post_init__(self) -> None:
        check_kind(self.kind)

    def __str__(self) -> str:
        return f"layers.{self.layer}.{self.kind}"

    @classmethod
    def parse(cls, text: str) -> Site:
        parts = text.split(".")
        if len(parts) != 3 or parts[0] != "layers" or not parts[1].lstrip("-").isdigit():
            raise NeuronlabError(f"cannot read site {text!r}: write it as layers.<index>.<kind>, e.g. layers.3.act")
        return cls(int(parts[1]), parts[2])


def get_module(root: nn.Module, path: str) -> nn.Module:
    """The submodule at dotted `path` (or the first of `a|b` alternatives that exists); a clear error if none."""
    for option in path.split("|"):
        module: nn.Module | None = root
        for name in option.split("."):
            module = getattr(module, name, None)
            if module is None:
                break
        if module is not None:
            return module
    raise NeuronlabError(
        f"module path {path!r} does not resolve on {type(root).__name__}; the ArchSpec does not match this "
        "model: give it one with its module names, nl.set_arch(model, nl.ArchSpec(...)) (print the model to see them)"
    )


def module_device(module: nn.Module) -> torch.device:
    """Where a module computes: the execution device of its accelerate hook where it has one (device_map="auto",
    CPU or disk offload: offloaded weights sit on `meta` until the forward), else its first weight's device."""
    for m in module.modules():
        hook = getattr(m, "_hf_hook", None)
        for h in getattr(hook, "hooks", None) or [hook]:  # a SequentialHook holds several
            device = getattr(h, "execution_device", None)
            if device is not None:
                return torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
        weight = next(m.parameters(recurse=False), None)
        if weight is not None and weight.device.type != "meta":
            return weight.device
    return torch.device("cpu")


def layers_by(model: nn.Module, spec: ArchSpec) -> nn.ModuleList:
    """The decoder layers that `spec` names."""
    return cast(nn.ModuleList, get_module(model, spec.layers))


def check_layers(layers: Iterable[int], n_layers: int) -> None:
    """Raise, naming the first one, unless every layer index is in 0..n_layers - 1."""
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad:
        raise NeuronlabError(f"layer {bad[0]} is out of range: this model has layers 0..{n_layers - 1}")


def site_module_by(model: nn.Module, spec: ArchSpec, site: Site) -> tuple[nn.Module, str]:
    """The module that carries `site` and whether the value is its "input" or its "output"."""
    layers = layers_by(model, spec)
    check_layers([site.layer], len(layers))
    layer = layers[site.layer]
    if site.kind == "resid":
        return layer, "output"
    if site.kind == "router":
        if spec.router is None:
            raise NeuronlabError(
                f"site {site} is not served: this model has no router (the `router` site is for "
                "mixtures of experts; its ArchSpec names none)"
            )
        try:
            return get_module(layer, spec.router), "output"
        except NeuronlabError:
            raise NeuronlabError(
                f"layer {site.layer} has no router at {spec.router!r} (a dense FFN among expert "
                "layers?): record the router of the expert layers only"
            ) from None
    path = spec.down if site.kind == "neuron" else getattr(spec, site.kind)
    if path is None:
        if site.kind == "attn_out":
            why = (
                "its layers are not h + attn + ffn (a post-norm, scaled or several residual streams), so no attention "
                "output adds up to the next hidden state"
            )
        elif spec.down is None:
            why = (
                "its FFN is a mixture of experts: a neuron of expert e sees only the tokens routed to e, so there is "
                "no one value per token"
            )
        else:
            why = "it has no activation module (use `neuron`)"
        kinds = (("neuron", spec.down), ("ffn_out", spec.ffn_out), ("attn_out", spec.attn_out), ("resid", "layer"))
        served = ", ".join(k for k, p in kinds if p)
        raise NeuronlabError(f"site {site} is not served on this model: {why}. Served: {served}")
    return get_module(layer, path), "input" if site.kind == "neuron" else "output"


def down_io_by(model: nn.Module, spec: ArchSpec) -> tuple[int, int]:
    """(in, out) widths of the down projection (the ArchSpec says whether its weight is [out, in] or [in, out])."""
    if spec.down is None:
        site_module_by(model, spec, Site(0, "neuron"))  # the error that says why
        raise AssertionError("site_module_by raises where there is no down projection")
    weight = getattr(get_module(layers_by(model, spec)[0], spec.down), "weight", None)
    if weight is None or weight.dim() != 2:
        raise NeuronlabError(f"the down projection {spec.down!r} has no 2-D weight; the ArchSpec does not match")
    return (weight.shape[0], weight.shape[1]) if spec.conv1d else (weight.shape[1], weight.shape[0])


def router_experts(router: nn.Module) -> int:
    """The number of experts a router chooses among: the rows of its first 2-D weight [experts, d_model] (its own,
    or its gate's: HunYuan's gate.wg)."""
    weight = next((w for w in router.parameters() if w.dim() == 2), None)
    if weight is None:
        raise NeuronlabError("the router has no 2-D weight [experts, d_model]; the ArchSpec does not match")
    return int(weight.shape[0])


def site_width_by(model: nn.Module, spec: ArchSpec, kind: str) -> int:
    """Number of values per token at a site kind: d_ff for `act`/`neuron`, the experts for `router`, else d_model."""
    if kind == "router":
        last = Site(len(layers_by(model, spec)) - 1, kind)
        return router_experts(site_module_by(model, spec, last)[0])
    if spec.down is None and kind not in NEURON_KINDS:  # a mixture of experts
        return text_config(model).hidden_size
    d_ff, d_model = down_io_by(model, spec)
    return d_ff if kind in NEURON_KINDS else d_model


HookFn = Callable[[Tensor], Tensor | None]


FFN_KINDS = ("act", "neuron", "ffn_out")


def routing(output) -> Tensor:
    """[tokens, experts] weights from a router's output (logits, top-k weights, top-k expert indices); 0 where an
    expert is not chosen. Routers that return only logits (transformers 4.x) choose inside their block: refused."""
    if not (isinstance(output, tuple) and len(output) == 3 and not output[2].is_floating_point()):
        raise NeuronlabError(
            "this model's router returns only its logits; the `router` site reads the choice a "
            "router returns (logits, weights, expert indices), as in transformers >= 5: upgrade "
            "transformers"
        )
    logits, weights, experts = output
    return torch.zeros(logits.shape, dtype=torch.float32, device=logits.device).scatter_(
        -1, experts.long(), weights.float()
    )


def _install(
    module: nn.Module, where: str, fn: HookFn, shape: list | None, router: bool = False
) -> torch.utils.hooks.RemovableHandle:
    """Hook `fn` on a module's input or output. Where the ArchSpec says the FFN runs on flattened tokens
    [batch*pos, width] (OPT), `shape` holds the layer input's (batch, pos) and `fn` still sees [batch, pos, width].
    A router's output is read as `routing` weights; a hook may not replace them."""

    def call(value: Tensor) -> Tensor | None:
        flat = bool(shape) and value.dim() == 2
        if shape is not None and not shape and value.dim() == 2:  # the layer's input was not found where expected
            import transformers

            raise NeuronlabError(
                f"this FFN runs on flattened tokens, and the layer's input (hidden_states [batch, pos, "
                f"d_model]) was not among its arguments on transformers {transformers.__version__}: "
                "the (batch, pos) shape cannot be restored; please report it"
            )
        view = value.view(*shape[0], value.shape[-1]) if flat and shape else value
        new = fn(view)
        if new is None or new is view:
            return None
        if new.shape != view.shape:
            raise NeuronlabError(
                f"a hook returned shape {tuple(new.shape)} for a value of shape {tuple(view.shape)}: "
                "return None to only read the value, or a replacement of the same shape"
            )
        return new.reshape(value.shape) if flat else new

    if where == "input":

        def pre_hook(_module, args, kwargs):
            new = call(args[0])
            return None if new is None else ((new, *args[1:]), kwargs)

        return module.register_forward_pre_hook(pre_hook, with_kwargs=True)

    def hook(_module, _args, output):
        if router:
            if call(routing(output)) is not None:
                raise NeuronlabError("the router site is read-only: intervene on ffn_out, attn_out or resid")
            return None
        seq = isinstance(output, (tuple, list))  # GPT-1's blocks return a list
        new = call(output[0] if seq else output)
        if new is None:
            return None
        return type(output)((new, *output[1:])) if seq else new

    return module.register_forward_hook(hook)


def _shape_hook(shape: list):
    def pre_hook(_module, args, kwargs):
        x = args[0] if args else kwargs.get("hidden_states")
        shape[:] = [tuple(x.shape[:-1])] if isinstance(x, Tensor) and x.dim() == 3 else []

    return pre_hook


@contextmanager
def hooked_by(model: nn.Module, spec: ArchSpec, fns: Mapping[Site, HookFn]) -> Iterator[None]:
    """Install one hook per site for the duration of the block; always removed, also on exceptions."""
    seen: dict[tuple[int, str], Site] = {}
    shapes: dict[int, list] = {}  # layer index -> [(batch, pos)] of the layer's current input (flat FFNs only)
    targets: list[tuple[nn.Module, str, HookFn, list | None, bool]] = []
    for site, fn in fns.items():
        module, where = site_module_by(model, spec, site)
        key = (id(module), where)
        if key in seen:
            raise NeuronlabError(
                f"sites {seen[key]} and {site} resolve to the same module; the ArchSpec must name one module per layer"
            )
        seen[key] = site
        flat = (spec.flat_ffn and site.kind in FFN_KINDS) or site.kind == "router"  # routers see [tokens, width]
        targets.append((module, where, fn, shapes.setdefault(site.layer, []) if flat else None, site.kind == "router"))
    layers = layers_by(model, spec)
    handles = []
    try:
        for layer, shape in shapes.items():
            handles.append(layers[layer].register_forward_pre_hook(_shape_hook(shape), with_kwargs=True))
        for module, where, fn, flat_shape, router in targets:
            handles.append(_install(module, where, fn, flat_shape, router))
        yield
    finally:
        for handle in handles:
            handle.remove()


class StopForward(Exception):
    """Raised inside a traced forward pass once every traced site has been seen; `trace` swallows it."""


class Trace(dict):
    """What `trace` captured: site -> value (or what `reduce` returned), and the sites that never ran."""

    def __init__(self, sites: list[Site]):
        super().__init__()
        self.sites, self.fired = sites, set[Site]()

    def missing(self) -> list[Site]:
        return [s for s in self.sites if s not in self.fired]


@contextmanager
def trace_by(
    model: nn.Module,
    spec: ArchSpec,
    sites,
    stop: bool = False,
    reduce: Callable[[Site, Tensor], object] | None = None,
) -> Iterator[Trace]:
    """`sites.trace` given the spec (its docstring says how to use it)."""
    sites = [s if isinstance(s, Site) else Site.parse(s) for s in sites]
    if not sites:
        raise NeuronlabError("trace needs at least one site")
    tr = Trace(sites)

    def hook(site: Site) -> HookFn:
        def fn(h: Tensor) -> None:
            kept = h.detach().clone() if reduce is None else reduce(site, h)  # a copy: some layers add in place
            if kept is not None:
                tr[site] = kept
            tr.fired.add(site)
            if stop and len(tr.fired) == len(sites):
                raise StopForward

        return fn

    try:
        with hooked_by(model, spec, {site: hook(site) for site in sites}):
            yield tr
    except StopForward:
        pass
