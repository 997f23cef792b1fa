"""Load any Hugging Face causal LM and tokenizer, and describe a model so results can be matched to it.

model, tok = load_model("EleutherAI/pythia-160m", revision="step1000", dtype="bfloat16")
model, tok = load_model("../shared/models/stories260K")      # a local folder works the same way
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from neuronlab.errors import NeuronlabError
from neuronlab.models.arch import ArchSpec
from neuronlab.models.gguf import PACKAGED, checkpoint_for, is_gguf, packaged_path
from neuronlab.models.resolve import arch_spec, set_arch
from neuronlab.models.sites import decoder_layers, get_module, site_width
from neuronlab.registry import Registry

if TYPE_CHECKING:
    from transformers import PreTrainedModel

DTYPES: Registry[torch.dtype] = Registry(
    "dtype", torch.dtype, entries={"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
)
PROBE_VALUES = 16  # weight values kept as a fingerprint, compared with a tolerance (dtype-robust)


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    return DTYPES[dtype]  # an unknown name: one error listing the dtypes


def load_model(
    name_or_path: str | Path,
    dtype: str | torch.dtype | None = None,
    device: str | None = None,
    revision: str | None = None,
    device_map: str | dict | None = None,
    offload_folder: str | Path | None = None,
    trust_remote_code: bool = False,
    arch: ArchSpec | None = None,
    check: bool = True,
) -> tuple[PreTrainedModel, Any]:
    """A causal LM in eval mode and its tokenizer (given a pad token if it has none).

    `name_or_path` is a hub id, a local folder, a .gguf file (dequantized to float; `models/gguf.py`) or a packaged
    name (`neuronlab models list`; a folder of that name wins);
    `revision` a branch, tag or commit (Pythia's
    `step1000`); `dtype` float32/float16/bfloat16 (default: the checkpoint's own); `device` one device
    ("cuda:0") or `device_map` ("auto") to spread a large model over several (and over CPU and disk:
    accelerate's offload, with `offload_folder`). Finds the ArchSpec (the table's
    row, or one derived and proven on a probe forward) and fails early, with the fix, where none fits and no
    `arch` is given (`check=False` leaves that to the first use: `neuronlab inspect-model`); the model carries its
    spec from then on (`models/resolve.py`), `arch` included.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if device is not None and device_map is not None:
        raise NeuronlabError("pass either device or device_map, not both")
    kwargs = dict(revision=revision, trust_remote_code=trust_remote_code)
    source = name_or_path
    if str(name_or_path) in PACKAGED and not Path(name_or_path).exists():
        name_or_path = packaged_path(str(name_or_path))
    if is_gguf(name_or_path):  # dequantized once into a plain checkpoint in the cache (see models/gguf.py)
        name_or_path = checkpoint_for(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
        model: Any = AutoModelForCausalLM.from_pretrained(
            name_or_path,
            dtype=resolve_dtype(dtype) or "auto",
            device_map=device_map,
            **kwargs,
            **({"offload_folder": str(offload_folder)} if offload_folder is not None else {}),
        )
    except (OSError, ValueError) as err:  # missing folder, unknown hub id, malformed config
        raise NeuronlabError(f"cannot load model {str(name_or_path)!r}: {err}") from err
    if device is not None:
        model = model.to(device)
    model.eval()
    model.neuronlab_revision = revision
    model.config._name_or_path = str(source)
    if arch is not None:
        set_arch(model, arch)  # the model carries it: every later call uses it
    if check:
        arch_spec(model)  # unknown architectures fail here, not in the middle of a run
    ensure_pad_token(tokenizer)
    return model, tokenizer


ModelSource = tuple[Any, Any] | Callable[[], tuple[Any, Any]]  # (model, tokenizer), or what loads them


def loaded(source: ModelSource) -> tuple[Any, Any]:
    """model, tok = loaded(lambda: load_model("EleutherAI/pythia-160m"))   # or loaded((model, tok))

    (model, tokenizer) from a pair, or from a loader called now: the functions that do all of a command take
    either, so their cheap checks (files to read, paths to write) run before a loader spends minutes."""
    return source if isinstance(source, tuple) else source()


def ensure_pad_token(tokenizer) -> None:
    """Give a tokenizer without a pad token one (EOS, else UNK, else BOS); padding is always masked."""
    if tokenizer.pad_token_id is not None:
        return
    for name in ("eos_token", "unk_token", "bos_token"):
        token = getattr(tokenizer, name, None)
        if token is not None:
            tokenizer.pad_token = token
            return
    raise NeuronlabError("the tokenizer has no pad, EOS, UNK or BOS token: set tokenizer.pad_token first")


PROJECTIONS = 8  # independent random projections per part: a change escapes all of them with odds ~1e-5


def _signs(n: int, seed: int) -> torch.Tensor:
    """Fixed pseudo-random +-1 values, [n, PROJECTIONS] (the same on every machine)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (n, PROJECTIONS), generator=g, dtype=torch.int8).float() * 2 - 1


def _summary(params: Sequence[torch.Tensor]) -> list[float] | None:
    """[PROJECTIONS random projections..., Frobenius norm] of a group of tensors: per projection k the sum over
    tensors of u_k^T W v_k with fixed +-1 vectors (first order in any change of W), then sqrt(sum W^2).
    None for offloaded (meta) weights."""
    if not params or any(p.device.type == "meta" for p in params):
        return None
    proj, sq = torch.zeros(PROJECTIONS, dtype=torch.float64), 0.0
    with torch.no_grad():
        for p in params:
            w = p.detach().float().reshape(p.shape[0], -1) if p.dim() > 1 else p.detach().float()[None, :]
            u, v = _signs(w.shape[0], 1 + w.shape[0]).to(w.device), _signs(w.shape[1], 2 + w.shape[1]).to(w.device)
            proj += ((w @ v) * u).sum(0).double().cpu()  # [PROJECTIONS]
            sq += float(torch.linalg.vector_norm(w)) ** 2  # no float64 copy of the weights (a 262k vocabulary: 1.3 GB)
    return [round(float(x), 6) for x in proj] + [round(sq**0.5, 6)]


def fingerprint(model: nn.Module) -> dict:
    """Numbers that change when a model's weights change, and not when they are cast to another dtype: per layer,
    for the FFN projections (up, gate, down) and for the rest of the layer (attention, norms), a fixed random
    projections of the weights and their norm; the same for the final norm with the unembedding. A change of a part
    by 3% of its norm or more (a fine-tune, a baked plan on 1% of the neurons) is told apart with odds of a miss
    below 1e-4; a bf16 or float16 cast moves the projections by about 0.2% (tolerance 1%). One pass over the
    weights (a second or two at 7B)."""
    spec = arch_spec(model)
    ffn, other = [], []
    for layer in decoder_layers(model):
        ffn_paths = (spec.up, spec.gate, spec.down) if spec.down else (spec.ffn_out,)  # a mixture of experts: the block
        mine = {id(p) for path in ffn_paths if path for p in get_module(layer, path).parameters()}
        params = list(layer.parameters())
        ffn.append(_summary([p for p in params if id(p) in mine]))
        other.append(_summary([p for p in params if id(p) not in mine]))
    norm = [*get_module(model, spec.final_norm).parameters()] if spec.final_norm else []
    head = [*norm, *get_module(model, spec.unembed).parameters()]
    return {"ffn": ffn, "attention and norms": other, "final norm and unembedding": _summary(head)}


def model_info(model: Any) -> dict:
    """Identity of a model, saved with every result: name, revision, shape, an embedding probe and the weight
    fingerprint (see `fingerprint`)."""
    config = model.config
    embed = model.get_input_embeddings().weight
    flat = embed.detach().reshape(-1)
    step = max(1, flat.numel() // PROBE_VALUES)
    probe = flat[::step][:PROBE_VALUES].float().cpu().tolist() if flat.device.type != "meta" else []
    return {
        "name_or_path": str(getattr(config, "_name_or_path", "") or ""),
        "revision": getattr(model, "neuronlab_revision", None),
        "model_type": config.model_type,
        "n_layers": len(decoder_layers(model)),
        "d_model": site_width(model, "ffn_out"),
        "d_ff": site_width(model, "act") if arch_spec(model).down else None,  # None: mixture of experts
        "vocab": int(embed.shape[0]),
        "probe": [round(v, 6) for v in probe],
        "fingerprint": fingerprint(model),
    }


def cached_model_info(model: Any) -> dict:
    """`model_info(model)`, kept on the model until its weights change (a parameter replaced, or changed in place:
    its version counter moves), so checking every `apply` against a plan's neuron sets costs one pass, not one
    each."""
    key = (arch_spec(model), [(id(p), p._version) for p in model.parameters()])
    cached = getattr(model, "_neuronlab_identity", None)
    if cached is None or cached[0] != key:
        cached = (key, model_info(model))
        model._neuronlab_identity = cached
    return cached[1]


FINGERPRINT_RTOL = 1e-2  # of the norm: a bf16 cast moves a projection by ~1.6e-3 of it (3 sigma ~ 0.5%)


def _close(a: list | None, b: list | None) -> bool:
    if a is None or b is None or len(a) != len(b):
        return True  # offloaded weights, or a fingerprint of another layout: nothing to compare
    bound = FINGERPRINT_RTOL * max(a[-1], b[-1]) + 1e-9
    return all(abs(x - y) <= bound for x, y in zip(a, b, strict=True))


def same_model(a: dict, b: dict) -> str | None:
    """None if two model_info dicts describe the same weights, else which part differs. Results saved before
    fingerprints existed are compared by their embedding probe only."""
    for key in ("model_type", "n_layers", "d_model", "d_ff", "vocab"):
        if a.get(key) != b.get(key):
            return f"{key} {a.get(key)} != {b.get(key)}"
    pa, pb = torch.tensor(a.get("probe", [])), torch.tensor(b.get("probe", []))
    if pa.numel() and pb.numel() and (pa.shape != pb.shape or not torch.allclose(pa, pb, rtol=2e-2, atol=1e-3)):
        return "the input embeddings differ"
    fa, fb = a.get("fingerprint"), b.get("fingerprint")
    if not fa or not fb:
        return None
    for part in ("ffn", "attention and norms"):
        for layer, (x, y) in enumerate(zip(fa[part], fb[part], strict=True)):
            if not _close(x, y):
                return f"the {part} weights of layer {layer} differ"
    part = "final norm and unembedding"
    if not _close(fa.get(part), fb.get(part)):
        return f"the {part} differ"
    return None


def require_same_model(made_for: dict | None, model: nn.Module | dict, what: str) -> None:
    """Raise unless `what` (e.g. "these stats") was made on `model` (a model or its model_info); does nothing when
    `made_for` is empty (an artifact that names no model)."""
    if not made_for:
        return
    info = model if isinstance(model, dict) else cached_model_info(model)
    differs = same_model(made_for, info)
    if differs:
        name = made_for.get("name_or_path") or "an unnamed model"
        raise NeuronlabError(
            f"{what}: made on another model ({name}: {differs}); redo that step on this model, "
            "or load the model it was made on"
        )
