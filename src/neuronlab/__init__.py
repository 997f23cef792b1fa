"""neuronlab: find, steer and tune the neurons of transformer language models.

import neuronlab as nl
model, tok = nl.load_model("path-or-hub-id")
stats = nl.record(model, tok, {"en": en_texts, "fr": fr_texts}, site="act")
plan = nl.Plan([nl.Scale(factor=2.0, site="act", neurons=ns.subset(["fr"]))])
with nl.apply(model, plan):
    model(**batch)
"""

from neuronlab.errors import NeuronlabError
from neuronlab.evaluate.math import evaluate_math, extract_answer
from neuronlab.evaluate.perplexity import continuation_logprob, perplexity
from neuronlab.intervene.apply import apply
from neuronlab.intervene.bake import bake
from neuronlab.intervene.plan import (
    Add,
    DynScale,
    Intervention,
    LayerStat,
    Plan,
    Scale,
    Set,
    Zero,
    register_intervention,
)
from neuronlab.intervene.steer import VARIANTS, expert_plan, steering_plan
from neuronlab.learn.finetune import Delta, FinetuneConfig, finetune, freeze_except_ffn
from neuronlab.learn.methods import LearnedIntervention, register_method
from neuronlab.learn.runs import fit_task
from neuronlab.learn.scalars import ScalingConfig, evaluate_scaling, train_scaling
from neuronlab.models.arch import ARCH_SPECS, ArchSpec, arch_spec, register_arch
from neuronlab.models.load import load_model, model_info
from neuronlab.models.sites import Site, hooked, trace
from neuronlab.record.recorder import RecordConfig, record
from neuronlab.record.stats import Stats
from neuronlab.select.attribution import Attribution, AttributionConfig, attribute, attribution_neurons
from neuronlab.select.experts import Expertise, expertise, responses
from neuronlab.select.lape import LapeConfig, activated, activation_values, lape
from neuronlab.select.layers import LayerConfig, LayerSelection, select_layers
from neuronlab.select.neuron_set import NeuronSet
from neuronlab.select.ranking import auroc, average_precision

__version__ = "0.1.0"

__all__ = [
    "ARCH_SPECS",
    "VARIANTS",
    "Add",
    "ArchSpec",
    "Attribution",
    "AttributionConfig",
    "Delta",
    "DynScale",
    "Expertise",
    "FinetuneConfig",
    "Intervention",
    "LapeConfig",
    "LayerConfig",
    "LayerSelection",
    "LayerStat",
    "LearnedIntervention",
    "NeuronSet",
    "NeuronlabError",
    "Plan",
    "RecordConfig",
    "Scale",
    "ScalingConfig",
    "Set",
    "Site",
    "Stats",
    "Zero",
    "activated",
    "activation_values",
    "apply",
    "arch_spec",
    "attribute",
    "attribution_neurons",
    "auroc",
    "average_precision",
    "bake",
    "continuation_logprob",
    "evaluate_math",
    "evaluate_scaling",
    "expert_plan",
    "expertise",
    "extract_answer",
    "finetune",
    "fit_task",
    "freeze_except_ffn",
    "hooked",
    "lape",
    "load_model",
    "model_info",
    "perplexity",
    "record",
    "register_arch",
    "register_intervention",
    "register_method",
    "responses",
    "select_layers",
    "steering_plan",
    "trace",
    "train_scaling",
]
