"""The toy-model recipes (neuronlab.demo.toys): deterministic, saved with their versions, and the stored fixtures
are what the recipes in the repository describe."""

import json
from dataclasses import asdict

import pytest
import torch

import neuronlab as nl
from neuronlab.demo.toys import TOYS, save_toy, train_toy

from ..conftest import FLORES, needs_shared
from ..conftest import TOYS as STORED

pytestmark = needs_shared(FLORES)


@pytest.fixture(scope="module")
def flores():
    from neuronlab.data.corpora import read_text_dir

    return read_text_dir(FLORES, "*.devtest")


@pytest.mark.parametrize("name", sorted(TOYS))
def test_a_few_steps_of_a_recipe_are_deterministic_and_saved_with_their_versions(name, flores, tmp_path):
    first = train_toy(name, flores, steps=3)
    again = train_toy(name, flores, steps=3)
    assert first[2] == again[2] and len(first[2]) == 3  # the same losses, step by step
    for (key, a), b in zip(first[0].state_dict().items(), again[0].state_dict().values(), strict=True):
        assert torch.equal(a, b), key
    save_toy(*first, tmp_path / name)
    record = json.loads((tmp_path / name / "training.json").read_text())
    assert record["recipe"]["steps"] == 3 and set(record["versions"]) >= {"torch", "transformers", "tokenizers"}
    model, tok = nl.load_model(tmp_path / name)
    ids = tok(["The number is"], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**ids).logits, first[0](**ids).logits)


@pytest.mark.parametrize("name", sorted(TOYS))
def test_the_stored_toys_were_made_by_the_recipes_here(name, flores):
    record = json.loads((STORED / name / "training.json").read_text())
    assert record["recipe"] == json.loads(json.dumps(asdict(TOYS[name](flores))))  # tuples as JSON lists
    assert (STORED / name / "model.safetensors").stat().st_size < 4 * 2**20
