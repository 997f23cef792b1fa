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
    "neuronlab.analyze.find_experts:find_experts",
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


CONFIGS = [
    "neuronlab.record.recorder:RecordConfig",
    "neuronlab.select.lape:LapeConfig",
    "neuronlab.select.attribution:AttributionConfig",
    "neuronlab.select.layers:LayerConfig",
    "neuronlab.learn.finetune:FinetuneConfig",
    "neuronlab.learn.scalars:ScalingConfig",
    "neuronlab.demo.pipeline:PipelineConfig",
    "neuronlab.analyze.find_experts:FindExpertsConfig",
]


@pytest.mark.parametrize("ref", CONFIGS)
def test_every_config_is_saved_with_the_version_and_read_back_refusing_unknown_fields(ref):
    import json

    from neuronlab.config import Config

    cls = load_ref(ref)
    assert issubclass(cls, Config)
    saved = json.loads(json.dumps(cls().to_dict()))  # through JSON, as a results file holds it
    assert saved["config"] == cls.__name__ and saved["neuronlab"] not in ("", None)
    assert cls.from_dict(saved) == cls()
    with pytest.raises(NeuronlabError, match=rf"{cls.__name__} has no setting colour: its settings are "):
        cls.from_dict({**saved, "colour": "red"})
    with pytest.raises(NeuronlabError, match=rf"settings of a OtherConfig, not of a {cls.__name__}"):
        cls.from_dict({**saved, "config": "OtherConfig"})


@pytest.mark.parametrize(
    "ref, field, bad",
    [
        ("neuronlab.record.recorder:RecordConfig", "site", "mlp"),
        ("neuronlab.select.attribution:AttributionConfig", "baseline", "noise"),
        ("neuronlab.select.attribution:AttributionConfig", "method", "lrp"),
        ("neuronlab.select.layers:LayerConfig", "method", "best"),
        ("neuronlab.demo.pipeline:PipelineConfig", "attribution", "shap"),
        ("neuronlab.analyze.find_experts:FindExpertsConfig", "pool", "median"),
    ],
)
def test_a_fixed_choice_is_checked_when_the_config_is_built(ref, field, bad):
    import typing

    cls = load_ref(ref)
    choices = typing.get_args(typing.get_type_hints(cls)[field])
    assert len(choices) >= 2  # typed Literal[...]
    with pytest.raises(NeuronlabError, match=rf"{cls.__name__}.{field} must be one of {', '.join(choices)}, not"):
        cls(**{field: bad})
