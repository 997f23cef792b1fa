"""What the real-model study scripts share: the options --model, --out, --threads (and --dtype), and loading
the model, by packaged name (`neuronlab models list`), .gguf file, folder or hub id."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import neuronlab as nl
from neuronlab.models.gguf import PACKAGED, packaged_path


def parser(doc: str, dtype: bool = True) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a packaged model name, a .gguf file, a folder or a hub id")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=2)
    if dtype:
        ap.add_argument("--dtype", default=None)
    return ap


def load(args: argparse.Namespace):
    """(model, tokenizer) of args.model in args.dtype (the checkpoint's where not given), on args.threads."""
    torch.set_num_threads(args.threads)
    path = packaged_path(args.model) if args.model in PACKAGED else args.model
    return nl.load_model(str(path), dtype=getattr(args, "dtype", None))
