"""The one settings convention (neuronlab.config.configured): each function that has a config takes the object as
`config=` or its fields as keywords, and refuses an unknown setting or a wrong object before it does any work."""

import inspect

import pytest

from neuronlab.config import configured
from neuronlab.errors import NeuronlabError
from neuronlab.learn.scalars import ScalingConfig

from .conftest import load_ref

FUNCTIONS = [
    "neuronlab.record.recorder:record",
    "neuronlab.select.lape:lape",
    "neuronlab.select.attribution:attribute",
    "neuronlab.select.layers:select_layers",
    "neuronlab.learn.finetune:finetune",
    "neuronlab.learn.scalars:train_scaling",
    "neuronlab.learn.runs:fit_task",
    "neuronlab.demo.pipeline:run",
]


def _required(fn) -> list[None]:
    """None for each positional argument without a default: the settings are checked before any is used."""
    params = inspect.signature(fn).parameters.values()
    return [None for p in params if p.default is inspect.Parameter.empty and p.kind is p.POSITIONAL_OR_KEYWORD]


@pytest.mark.parametrize("ref", FUNCTIONS)
def test_an_unknown_setting_is_one_error_naming_it(ref):
    fn = load_ref(ref)
    with pytest.raises(NeuronlabError, match=r"has no setting bogus: its settings are "):
        fn(*_required(fn), bogus=1)


@pytest.mark.parametrize("ref", FUNCTIONS)
def test_a_wrong_config_object_is_one_error(ref):
    fn = load_ref(ref)
    with pytest.raises(NeuronlabError, match=r"takes a \w+Config \(or its fields as keywords\)"):
        fn(*_required(fn), config={"epochs": 3})


def test_keywords_override_the_object_and_defaults_come_from_the_class():
    assert configured(ScalingConfig, None, {}, "x") == ScalingConfig()
    assert configured(ScalingConfig, None, {"epochs": 3}, "x") == ScalingConfig(epochs=3)
    base = ScalingConfig(method="dynscalar", epochs=7)
    assert configured(ScalingConfig, base, {"epochs": 3}, "x") == ScalingConfig(method="dynscalar", epochs=3)
    assert configured(ScalingConfig, base, {}, "x") is base
