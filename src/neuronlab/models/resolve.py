"""Resolving a model's ArchSpec once: the model carries it from then on.

    spec = arch_spec(model)          # a spec set on the model, else the table's row, else derived and proven
    set_arch(model, my_spec)         # a spec of your own: it wins over the table and derivation
    describe_arch(model)             # table row or derived, as code, and whether it is proven (inspect-model)

The first call that needs a model's spec resolves it; a derived spec (a model outside the table, proven on a probe
forward) and a spec set by hand are kept on the model itself (the attribute `_neuronlab_arch`), so they travel with
it (`copy.deepcopy` too) and nothing is derived twice. A table row is looked up each time (a dict lookup), so a
row registered later with `register_arch(..., replace=True)` takes effect. No function below takes an `arch` to pass
on: give a spec to the model (`set_arch`, or `load_model(..., arch=spec)`), not to each call.
"""

from __future__ import annotations

from typing import Any

from neuronlab.errors import NeuronlabError
from neuronlab.models.arch import ARCH_SPECS, ArchSpec
from neuronlab.models.derive import derive_spec
from neuronlab.models.verify import spec_code, verify_spec

CARRIED = "_neuronlab_arch"

_HOW_TO = """Give the model a spec of your own, for example:

    import neuronlab as nl
    spec = nl.ArchSpec(layers="model.layers", act="mlp.act_fn", down="mlp.down_proj", ffn_out="mlp",
                       attn_out="self_attn", final_norm="model.norm", unembed="lm_head", up="mlp.up_proj",
                       gate="mlp.gate_proj")
    nl.set_arch(model, spec)                  # this model; or nl.register_arch("{model_type}", spec): every model

Print `model` to see its module names; `neuronlab inspect-model M` prints the spec neuronlab derives."""


def set_arch(model: Any, spec: ArchSpec) -> ArchSpec:
    """Make `spec` the model's ArchSpec (over the table and derivation) for every later call; returns it."""
    if not isinstance(spec, ArchSpec):
        raise NeuronlabError(f"set_arch takes an ArchSpec, not {type(spec).__name__}")
    object.__setattr__(model, CARRIED, spec)  # a plain attribute: not a parameter, buffer or submodule
    return spec


def arch_spec(model: Any) -> ArchSpec:
    """The ArchSpec of `model`: the one it carries, else the table row for `model.config.model_type`, else one
    derived from its modules and proven on a probe forward (once; the model carries it after)."""
    carried = getattr(model, "__dict__", {}).get(CARRIED)
    if carried is not None:
        return carried
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if isinstance(model_type, str) and model_type in ARCH_SPECS:
        return ARCH_SPECS[model_type]
    how = _HOW_TO.format(model_type=model_type)
    try:
        spec = derive_spec(model)
    except NeuronlabError as err:
        raise NeuronlabError(
            f"architecture {model_type!r} is not in the table and its sites could not be derived: {err}.\n{how}"
        ) from None
    failed = verify_spec(model, spec)
    if failed:
        raise NeuronlabError(
            f"architecture {model_type!r} is not in the table and the derived sites\n    "
            f"{spec_code(spec)}\nfail on a probe forward: {'; '.join(failed)}.\n{how}"
        )
    return set_arch(model, spec)


def describe_arch(model: Any) -> dict:
    """about = describe_arch(model); print(about["code"]); about["failed"]   # [] when the spec is proven

    Which ArchSpec `model` has by its `model_type` and how it was found: {"model_type", "spec", "source" ("table
    row" or "derived from the module tree"), "code" (the spec as code to paste), "moe" (a mixture of experts: no
    act and neuron sites), "not_served" ({what: why} for the sites and the lens this spec refuses), "failed" (the
    identities that fail on a probe forward)}. Unlike `arch_spec` it reports a
    derived spec that fails instead of refusing it, and neither reads nor sets a spec the model carries.
    `neuronlab inspect-model` prints it."""
    model_type = model.config.model_type
    spec = ARCH_SPECS.get(model_type) or derive_spec(model)
    return {
        "model_type": model_type,
        "spec": spec,
        "source": "table row" if model_type in ARCH_SPECS else "derived from the module tree",
        "code": spec_code(spec),
        "moe": spec.down is None,
        "not_served": not_served(spec),
        "failed": verify_spec(model, spec),
    }


def not_served(spec: ArchSpec) -> dict[str, str]:
    """{site kind or "logit lens": why} for what `spec` refuses to serve (empty: every site and the lens)."""
    out = {}
    if spec.down is None:
        out["act, neuron"] = "a mixture of experts: expert neurons are served by nl.expert_neurons (docs/moe.md)"
    elif spec.act is None:
        out["act"] = "no activation module of its own in each layer (use neuron)"
    if spec.attn_out is None:
        out["attn_out"] = "the layer is not h + attn + ffn (post-norm, scaled or several residual streams)"
    if not spec.lens:
        out["logit lens"] = "the head does more than a final norm and the unembedding"
    return out
