"""The one Registry behind every named table: duplicates refused, wrong types refused, "did you mean", and the
tables that users extend (architectures, learned-intervention methods, intervention kinds) extended for real."""

from dataclasses import dataclass

import pytest
import torch

import neuronlab as nl
from neuronlab.artifacts import KINDS as ARTIFACTS
from neuronlab.data.contrast import TASKS
from neuronlab.intervene.plan import KINDS_OF_INTERVENTION
from neuronlab.learn.methods import METHODS, ActivScalar, LearnedIntervention
from neuronlab.registry import Registry

from .conftest import tiny_model


def test_registry_adds_by_decorator_and_refuses_duplicates():
    r = Registry("colour", entries={"red": "#f00"})

    @r.register("blue")
    def blue():
        return "#00f"

    with pytest.raises(nl.NeuronlabError, match="colour 'red' is already registered: pass replace=True"):
        r.add("red", "#e00")
    r.add("red", "#e00", replace=True)
    assert r["red"] == "#e00" and r["blue"] is blue and list(r) == ["red", "blue"] and r.names() == "red, blue"


def test_registry_refuses_an_entry_of_the_wrong_type():
    r = Registry("colour", str)
    with pytest.raises(nl.NeuronlabError, match="colour 'x' must be a str"):
        r.add("x", 3)
    with pytest.raises(nl.NeuronlabError, match="must be a subclass of Intervention"):
        KINDS_OF_INTERVENTION.add("NotOne", dict)


def test_unknown_names_get_one_error_with_the_closest_name():
    with pytest.raises(nl.NeuronlabError, match=r"unknown steering variant 'p_mx' \(did you mean 'p_max'\?\)"):
        nl.steering_plan(nl.NeuronSet({"fr": {0: [1]}}), "fr", "p_mx")
    with pytest.raises(nl.NeuronlabError, match=r"unknown architecture 'lama' \(did you mean 'llama'\?\)"):
        nl.ARCH_SPECS["lama"]
    with pytest.raises(nl.NeuronlabError, match=r"unknown contrast task 'pronouns'.*did you mean 'pronoun'"):
        TASKS["pronouns"]
    assert nl.ARCH_SPECS.get("nope") is None and "llama" in nl.ARCH_SPECS


def test_a_table_row_is_replaced_only_when_asked():
    row = nl.ARCH_SPECS["llama"]
    with pytest.raises(nl.NeuronlabError, match="already registered"):
        nl.register_arch("llama", row)
    nl.register_arch("llama", row, replace=True)
    assert nl.ARCH_SPECS["llama"] is row


@nl.register_intervention
@dataclass(frozen=True, eq=False)
class Clip(nl.Intervention):
    """A custom intervention: clip the selected values at `limit`."""

    limit: float = 0.0

    def edit(self, x, value, h):
        return x.clamp(max=self.limit)


def test_a_registered_intervention_applies_and_loads_from_plan_json(tmp_path):
    model = tiny_model("llama")
    ids = torch.tensor([[1, 5, 9, 3]])
    plan = nl.Plan([Clip(limit=0.0, layers=[0])])
    seen = {}
    with torch.no_grad(), nl.apply(model, plan), nl.hooked(model, {nl.Site(0, "act"): lambda h: seen.setdefault(0, h)}):
        model(input_ids=ids)
    assert float(seen[0].max()) <= 0.0  # the hook after the edit sees clipped values
    plan.save(tmp_path / "plan.json")
    (back,) = nl.Plan.load(tmp_path / "plan.json")
    assert isinstance(back, Clip) and back.limit == 0.0 and back.layers == [0]


def test_a_registered_method_trains_through_the_same_code_and_draws_itself():
    @nl.register_method
    class HalfScalar(ActivScalar):  # ActivScalar whose identity starts at 0.5
        name = "halfscalar"

        def identity(self, width, positions):
            return torch.full((positions,), 0.5)

    try:
        assert isinstance(METHODS["halfscalar"], HalfScalar)
        with pytest.raises(nl.NeuronlabError, match="already registered"):
            nl.register_method(HalfScalar)
        learned = LearnedIntervention("halfscalar", {"layers.1.ffn_out": torch.tensor([0.5, 2.0])})
        grids, cols, rows, center = learned.grids()
        assert grids == {"ffn_out": [[2.0, 0.5]]} and cols == ["-2", "-1"] and rows == ["1"] and center == 1.0
    finally:
        METHODS._entries.pop("halfscalar")
    with pytest.raises(TypeError, match="abstract"):
        nl.learn.methods.Method()


def test_every_format_tag_is_registered_once_by_the_module_that_writes_it():
    formats = set(ARTIFACTS)  # filled by the modules neuronlab/__init__.py imports
    assert {"neuronlab.stats/1", "neuronlab.responses/1", "neuronlab.similarity/1", "neuronlab.plan/2"} <= formats
    assert ARTIFACTS["neuronlab.scaling/1"] is ARTIFACTS["neuronlab.learned/1"]
