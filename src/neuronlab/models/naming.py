"""The name a page or a summary shows for a model: never an absolute path of the machine it ran on.

    model_name(stats.meta)                          # "gemma-3-270m" (a packaged model, even from its cache folder)
    model_name({"name_or_path": "EleutherAI/pythia-70m"})   # "EleutherAI/pythia-70m" (a hub id as it is)
    model_name("/home/me/runs/my-model")            # "my-model" (a local folder: its last path component)

A packaged model (`models/gguf.py` PACKAGED) is named by its packaged name, whether it was loaded from its .gguf file
or from the checkpoint folder that file was converted into (`checkpoint_for`: cache/gguf/<stem>-<16 hex>); any
other .gguf file by its file name; a hub id (`org/name` or `name`, relative, not a folder here) as it is; any other
local path by its last component.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from neuronlab.models.gguf import PACKAGED

_CONVERTED = re.compile(r"^(?P<stem>.+)-[0-9a-f]{16}$")  # checkpoint_for's folder: <gguf stem>-<file key>
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def model_name(model: Any, default: str = "a model") -> str:
    """The display name of `model`: a model, its model_info dict, a meta dict holding one under "model" (Stats,
    NeuronSet, Expertise, results.json), or a name or path; `default` where none is recorded."""
    if isinstance(model, dict):
        inner = model.get("model")
        source = (inner if isinstance(inner, dict) else model).get("name_or_path")
    elif isinstance(model, str | Path):
        source = model
    else:
        source = getattr(getattr(model, "config", None), "_name_or_path", None)
    text = str(source or "").strip()
    return _name(text) if text else default


def _name(text: str) -> str:
    windows = "\\" in text or re.match(r"^[A-Za-z]:", text) is not None
    path = PureWindowsPath(text) if windows else PurePosixPath(text)
    if not windows and not path.is_absolute() and _HUB_ID.match(text) and not Path(text).exists():
        return text  # a hub id
    last = path.name or text.strip("/\\") or "a model"
    by_file = {p.file.lower(): p.name for p in PACKAGED.values()}
    if last.lower().endswith(".gguf"):
        return by_file.get(last.lower(), last)
    converted = _CONVERTED.match(last)
    if converted and path.parent.name == "gguf":
        gguf = f"{converted['stem']}.gguf".lower()
        return by_file.get(gguf, converted["stem"])
    return last
