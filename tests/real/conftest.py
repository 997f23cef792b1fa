"""The packaged real models, loaded once per test module: `real` gives (name, .gguf path, model, tokenizer) for
each, and skips, saying why, where the model or the gguf package is not installed."""

from __future__ import annotations

import pytest

import neuronlab as nl
from neuronlab.models import gguf

from ..conftest import FLORES

NAMES = ["gemma-3-270m", "smollm2-135m-instruct"]
TEXTS = {  # FLORES-200 devtest lines where ../shared is present, else these
    "eng": ["The capital of France is Paris, a city on the Seine.", "She bought three apples at the market today."],
    "fra": ["La capitale de la France est Paris, une ville sur la Seine.", "Elle a acheté trois pommes au marché."],
}


def flores(lang: str, n: int) -> list[str]:
    path = FLORES / f"{lang}_Latn.devtest"
    if not path.exists():
        return TEXTS[lang]
    return path.read_text(encoding="utf-8").splitlines()[:n]


@pytest.fixture(scope="module", params=NAMES)
def real(request):
    name = request.param
    pytest.importorskip("gguf", reason='the gguf package is not installed (pip install "neuronlab[gguf]")')
    if not gguf.installed(name):
        pytest.skip(f"{name} is not installed ({gguf.PACKAGED[name].install})")
    path = gguf.packaged_path(name)
    model, tok = nl.load_model(path)
    return name, path, model, tok
