"""Tiny random models of every architecture family, built in-process from configs (no downloads)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from neuronlab.models.arch import ARCH_SPECS
from neuronlab.testing import TINY, char_tokenizer, tiny_causal_lm

SHARED = Path(__file__).resolve().parents[2] / "shared"
STORIES = SHARED / "models" / "stories260K"
FLORES = SHARED / "data" / "flores200_devtest"
TOYS = Path(__file__).parent / "fixtures" / "toys"  # trained once by `python -m neuronlab.demo.toys`

ARCHS = sorted(ARCH_SPECS)  # the families of the ArchSpec table, each built tiny (3 layers, d_model 32, d_ff 64)
V = TINY["vocab_size"]


def load_ref(ref: str):
    """The object a "module:name" reference names (the config and function tables of the tests)."""
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def tiny_model(arch: str, seed: int = 0):
    """A tiny random model of a table family, with weights spread enough that every site has real values."""
    return tiny_causal_lm(arch, seed, layers=3, spread=0.3)


def save_tiny(path: Path, arch: str, seed: int = 0) -> Path:
    """A tiny model and the character tokenizer saved as a Hugging Face folder (the path a hub id takes)."""
    tiny_model(arch, seed).save_pretrained(path)
    char_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """`tiny_dir(arch)`: a tiny model of that family saved as a Hugging Face folder (the path a hub id takes),
    built once per session."""
    made: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in made:
            made[arch] = save_tiny(tmp_path_factory.mktemp(f"tiny_{arch}"), arch)
        return made[arch]

    return get


@pytest.fixture(scope="session")
def model_dir(tiny_dir):
    """The tiny GPT-2 folder the command-line tests load."""
    return tiny_dir("gpt2")


@pytest.fixture(scope="session")
def tok():
    return char_tokenizer()


@pytest.fixture(params=ARCHS)
def arch_model(request):
    return request.param, tiny_model(request.param)


def needs_shared(path: Path):
    return pytest.mark.skipif(not path.exists(), reason=f"{path} is absent (../shared sits beside the checkout in CI)")


TEXTS = {
    "en": ["the cat sat on the mat", "a b", "hello world, this is a longer sentence of english text!", "x"],
    "fr": ["le chat est sur le tapis", "bonjour le monde", "ceci est une phrase un peu plus longue"],
}


def pytest_collection_modifyitems(config, items):
    """Tests on the packaged real models (marker `real`) run only when asked for with `-m real` (CI's extra step):
    they load 135M-270M parameter models, which the README's test command leaves out."""
    if "real" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="a real-model test: run it with `python -m pytest -m real` (see tests/real)")
    for item in items:
        if "real" in item.keywords:
            item.add_marker(skip)
