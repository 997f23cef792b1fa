"""Sites: where neuronlab reads or writes a model's values, and the one place hooks are installed.

    site = Site.parse("layers.12.act")      # Site(layer=12, kind="act")
    with hooked(model, {site: lambda h: print(h.shape)}):   # h: [batch, pos, d_ff]
        model(**batch)

Every function here takes the model alone: its ArchSpec is resolved once (`models/resolve.py`) and carried by the
model. Kinds, hook functions and the rules they follow: `models/hooks.py`, which does the work given a spec.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from torch import Tensor, nn

from neuronlab.models.hooks import (
    FFN_KINDS,
    KINDS,
    NEURON_KINDS,
    HookFn,
    Site,
    SiteKind,
    StopForward,
    Trace,
    check_kind,
    check_layers,
    down_io_by,
    get_module,
    hooked_by,
    layers_by,
    module_device,
    routing,
    site_module_by,
    site_width_by,
    trace_by,
)
from neuronlab.models.resolve import arch_spec

__all__ = [
    "FFN_KINDS",
    "KINDS",
    "NEURON_KINDS",
    "HookFn",
    "Site",
    "SiteKind",
    "StopForward",
    "Trace",
    "check_kind",
    "check_layers",
    "decoder_layers",
    "down_weight_io",
    "get_module",
    "hooked",
    "module_device",
    "routing",
    "site_module",
    "site_width",
    "trace",
]


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    return layers_by(model, arch_spec(model))


def site_module(model: nn.Module, site: Site) -> tuple[nn.Module, str]:
    """The module that carries `site` and whether the value is its "input" or its "output"."""
    return site_module_by(model, arch_spec(model), site)


def down_weight_io(model: nn.Module) -> tuple[int, int]:
    """(in, out) widths of the down projection."""
    return down_io_by(model, arch_spec(model))


def site_width(model: nn.Module, kind: str) -> int:
    """Number of values per token at a site kind: d_ff for `act`/`neuron`, the experts for `router`, else d_model."""
    return site_width_by(model, arch_spec(model), kind)


@contextmanager
def hooked(model: nn.Module, fns: Mapping[Site, HookFn]) -> Iterator[None]:
    """Install one hook per site for the duration of the block; always removed, also on exceptions."""
    with hooked_by(model, arch_spec(model), fns):
        yield


@contextmanager
def trace(
    model: nn.Module, sites, stop: bool = False, reduce: Callable[[Site, Tensor], object] | None = None
) -> Iterator[Trace]:
    """Capture the values at `sites` during the forward passes run inside the block (baukit TraceDict style).

        with trace(model, [Site(3, "act"), Site(5, "resid")], stop=True) as tr:
            model(**batch)                 # stops right after the last traced site: nothing later runs
        tr[Site(3, "act")].shape           # [batch, pos, d_ff], detached

    `reduce(site, value)` is called instead of keeping the value, and what it returns is kept unless None
    (record accumulates statistics there, so nothing of size [pos, width] is held). With `stop=True` the forward
    pass ends once every site has been seen; code after it inside the block does not run, so read the values
    after the block. `tr.missing()` lists sites that never ran (an ArchSpec that does not match the model).
    """
    with trace_by(model, arch_spec(model), sites, stop, reduce) as tr:
        yield tr
