"""Atomic writes: a reader (or a crashed run) sees the old file or the new one, never half of one.

    write_json("out/plan.json", data)                           # one file
    atomic_writes({tensors: safetensors_writer(t, fmt), plan: json_writer(data)})   # several: all or none
    atomic_folder("merged", lambda tmp: model.save_pretrained(tmp))              # a folder, swapped in whole

A write that fails (a full disk, a folder that cannot be written) leaves the previous artifact as it was, no
temporary file beside it, and raises one NeuronlabError naming the path and the fix.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from neuronlab.errors import NeuronlabError

Writer = Callable[[str], object]  # writes the artifact to the temporary path it is given


def _temp_beside(path: Path, folder: bool = False) -> str:
    """Create an empty temporary file (or folder) beside `path` with the permissions open() (mkdir) would give
    (the umask applied by the kernel: the process umask is never changed, so this is safe with threads)."""
    while True:
        tmp = str(path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            if folder:
                os.mkdir(tmp, 0o777)
            else:
                os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue


def _os_error(err: BaseException) -> OSError | None:
    """The operating-system error behind `err`: an OSError, or safetensors' own error type for a failed write
    ("I/O error: File too large (os error 27)"); None for anything else."""
    if isinstance(err, OSError):
        return err
    found = re.search(r"I/O error: (.*?) \(os error (\d+)\)", str(err))
    return OSError(int(found.group(2)), found.group(1)) if found else None


FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def write_error(path: Path, err: OSError) -> NeuronlabError:
    """One clear error for a write of `path` that failed with `err`, with the fix."""
    reason = err.strerror or str(err)
    fix = (
        "free disk space (or raise the file size limit) and run it again"
        if err.errno in FULL
        else "choose an output path in a folder you can write to"
    )
    return NeuronlabError(f"cannot write {path} ({reason}): {fix}; any earlier {path.name} is unchanged")


def _remove(tmp: str) -> None:
    if os.path.isdir(tmp) and not os.path.islink(tmp):
        shutil.rmtree(tmp, ignore_errors=True)
    elif os.path.lexists(tmp):
        os.unlink(tmp)


def atomic_writes(writers: Mapping[str | Path, Writer]) -> None:
    """Call each `write(tmp_path)` for a temporary file beside its path, then rename them all onto their paths:
    if any write fails, none is renamed (see module doc). Under several ranks only rank 0 writes (see
    `neuronlab.dist.writes_here`): the others computed the same result."""
    from neuronlab.dist import writes_here

    if not writes_here():
        return
    temps: dict[Path, str] = {}
    path = Path()
    try:
        for path, write in ((Path(p), w) for p, w in writers.items()):
            path.parent.mkdir(parents=True, exist_ok=True)
            temps[path] = _temp_beside(path)
            write(temps[path])
        for path, tmp in temps.items():
            os.replace(tmp, path)
    except BaseException as err:
        for tmp in temps.values():
            _remove(tmp)
        cause = _os_error(err)
        if cause is None:
            raise
        raise write_error(path, cause) from err


def atomic_write(path: str | Path, write: Writer) -> None:
    """Call `write(tmp_path)` for a temporary file beside `path`, then rename it onto `path`."""
    atomic_writes({path: write})


def atomic_folder(path: str | Path, write: Callable[[Path], object], replace: bool = True) -> None:
    """Call `write(tmp)` for a new folder beside `path`, then put it in place of `path` (absent or an empty folder;
    with `replace`, an earlier folder there is moved aside and deleted once the new one is in, put back if that
    fails). Only rank 0 writes, as in `atomic_writes`."""
    from neuronlab.dist import writes_here

    if not writes_here():
        return
    path, tmp = Path(path), ""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temp_beside(path, folder=True)
        write(Path(tmp))
        try:
            os.rename(tmp, path)
        except OSError as err:
            if not replace or err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            old = str(path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.old")
            os.rename(path, old)
            try:
                os.rename(tmp, path)
            except BaseException:
                os.rename(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as err:
        if tmp:
            _remove(tmp)
        cause = _os_error(err)
        if cause is None:
            raise
        raise write_error(path, cause) from err


def remove_temps(path: str | Path) -> list[str]:
    """Delete the temporary files that writers of `path` killed mid-write left beside it (their names); call it only
    where no other process is writing `path`, such as a run resuming its own checkpoint."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[0-9a-f]{{12}}\.tmp")
    found = [p for p in path.parent.glob(f".{path.name}.*.tmp") if pattern.fullmatch(p.name)]
    for p in found:
        _remove(str(p))
    return [p.name for p in found]


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


def json_writer(data) -> Writer:
    """A writer of `data` as indented JSON (for `atomic_writes`)."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, ensure_ascii=False)
            f.write("\n")

    return write


def write_json(path: str | Path, data) -> None:
    atomic_write(path, json_writer(data))


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


def safetensors_writer(tensors: dict, fmt: str, **metadata: str) -> Writer:
    """A writer of tensors plus string metadata (with a "format" tag) as one safetensors file (for
    `atomic_writes`)."""
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in tensors.items()}
    return lambda tmp: save_file(tensors, tmp, metadata={"format": fmt, **metadata})


def write_safetensors(path: str | Path, tensors: dict, fmt: str, **metadata: str) -> None:
    """Tensors plus string metadata (with a "format" tag) in one safetensors file, written atomically."""
    atomic_write(path, safetensors_writer(tensors, fmt, **metadata))


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
        raise NeuronlabError(
            f"{path} is not a safetensors file ({err}): it is truncated, damaged or of another kind; "
            f"give a {what} file that neuronlab wrote, or write it again"
        ) from err
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
