"""Atomic writes: a reader (or a crashed run) sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call `write(tmp_path)` for a temporary file beside `path`, then rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json(path: str | Path, data) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, ensure_ascii=False)
            f.write("\n")

    atomic_write(path, write)


def write_safetensors(path: str | Path, tensors: dict, fmt: str, **metadata: str) -> None:
    """Tensors plus string metadata (with a "format" tag) in one safetensors file, written atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"format": fmt, **metadata}))


def read_safetensors(path: str | Path, fmt: str, what: str) -> tuple[dict, dict[str, str]]:
    """(tensors, metadata) of a file written by write_safetensors with format `fmt`; clear errors otherwise."""
    from safetensors import safe_open

    from neuronlab.errors import NeuronlabError

    path = Path(path)
    if not path.is_file():
        raise NeuronlabError(f"no {what} file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types for corrupt or empty files
        raise NeuronlabError(f"{path} is not a safetensors file: {err}") from err
    if header.get("format") != fmt:
        raise NeuronlabError(f"{path} is not a neuronlab {what} file (format {header.get('format')!r})")
    return tensors, header


def safetensors_format(path: str | Path) -> str | None:
    """The "format" tag of a safetensors file written by neuronlab (None if it has none or cannot be read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("format")
    except Exception:  # noqa: BLE001 - not a safetensors file: the caller says what it expected
        return None
