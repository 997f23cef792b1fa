"""Atomic writes: a reader (or a crashed run) sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path

from neuronlab.errors import NeuronlabError


def _temp_beside(path: Path) -> str:
    """Create an empty temporary file beside `path` with the permissions open() would give (0666 less the
    umask, applied by the kernel: the process umask is never changed, so this is safe with threads)."""
    while True:
        tmp = str(path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue


def atomic_write(path: str | Path, write: Callable[[str], object]) -> None:
    """Call `write(tmp_path)` for a temporary file beside `path`, then rename it onto `path`. Under several ranks
    only rank 0 writes (see `neuronlab.dist.writes_here`): the others computed the same result."""
    from neuronlab.dist import writes_here

    if not writes_here():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_beside(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def check_writable(*paths: str | Path | None, folder: bool = False) -> None:
    """Raise one clear error unless every path (a file, or with folder=True a folder) can be written: called
    before long work starts, so a bad --out never costs a run. Creates missing parent folders."""
    for path in paths:
        if path is None:
            continue
        path = Path(path)
        where = path if folder else path.parent
        try:
            if path.is_dir() and not folder:
                raise OSError(f"{path} is a folder")
            where.mkdir(parents=True, exist_ok=True)
            os.unlink(_temp_beside(where / "probe"))
        except OSError as err:
            reason = err.strerror or str(err)
            raise NeuronlabError(
                f"cannot write {path} ({reason}): choose an output path in a folder you can write to"
            ) from None


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


def read_json(path: str | Path, what: str, formats: tuple[str, ...] = ()) -> dict:
    """A JSON object from `path` with one clear error for a missing file, text that is not JSON, or (given
    `formats`) a "format" tag that is not one of them."""
    path = Path(path)
    if not path.is_file():
        raise NeuronlabError(f"no {what} file at {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise NeuronlabError(f"{path} is not JSON ({err}): give a {what} file that neuronlab wrote") from None
    if not isinstance(data, dict) or (formats and data.get("format") not in formats):
        raise NeuronlabError(f"{path} is not a neuronlab {what} (no format {formats[0] if formats else ''!r})")
    return data


def write_safetensors(path: str | Path, tensors: dict, fmt: str, **metadata: str) -> None:
    """Tensors plus string metadata (with a "format" tag) in one safetensors file, written atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"format": fmt, **metadata}))


def read_safetensors(path: str | Path, fmt: str | tuple[str, ...], what: str) -> tuple[dict, dict[str, str]]:
    """(tensors, metadata) of a file written by write_safetensors with format `fmt` (or one of several: a current
    format and the older ones that still load); clear errors otherwise."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise NeuronlabError(f"no {what} file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  (safe_open is not iterable)
    except Exception as err:  # safetensors raises its own error types for corrupt or empty files
        raise NeuronlabError(f"{path} is not a safetensors file: {err}") from err
    if header.get("format") not in ((fmt,) if isinstance(fmt, str) else fmt):
        raise NeuronlabError(f"{path} is not a neuronlab {what} file (format {header.get('format')!r})")
    return tensors, header


def safetensors_format(path: str | Path) -> str | None:
    """The "format" tag of a safetensors file written by neuronlab (None if it has none or cannot be read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("format")
    except Exception:
        return None
