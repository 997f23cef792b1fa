"""neuronlab: find, steer and tune the neurons of transformer language models.

import neuronlab as nl
model, tok = nl.load_model("path-or-hub-id")
stats = nl.record(model, tok, {"en": en_texts, "fr": fr_texts}, site="act")
plan = nl.Plan([nl.Scale(factor=2.0, site="act", neurons=ns.subset(["fr"]))])
with nl.apply(model, plan):
    model(**batch)
"""

from neuronlab.analyze.arithmetic import ablate_from, extract_o_vector, patch_o_vector, score_relation
from neuronlab.analyze.expert_study import align_experts, alignment_trend, expert_tree
from neuronlab.analyze.find_experts import FindExpertsConfig, find_experts, load_baselines
from neuronlab.analyze.lens import logit_lens
from neuronlab.artifacts import describe, load_artifact
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
from neuronlab.models.arch import ARCH_SPECS, ArchSpec, register_arch
from neuronlab.models.load import load_model, model_info
from neuronlab.models.resolve import arch_spec, set_arch
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

# the functions the command line calls (cli/evaluate, experts, demo, record)

# the functions the command line calls (cli/analyze, scale, tune, models, find, common)

__all__ = [
    # the command line's: cli/evaluate, experts, demo, record
    # the command line's: cli/analyze, scale, tune, models, find, common
    "ARCH_SPECS",
    "VARIANTS",
    "Add",
    "ArchSpec",
    "Attribution",
    "AttributionConfig",
    "Delta",
    "DynScale",
    "Expertise",
    "FindExpertsConfig",
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
    "ablate_from",
    "activated",
    "activation_values",
    "align_experts",
    "alignment_trend",
    "apply",
    "arch_spec",
    "attribute",
    "attribution_neurons",
    "auroc",
    "average_precision",
    "bake",
    "continuation_logprob",
    "describe",
    "evaluate_math",
    "evaluate_scaling",
    "expert_plan",
    "expert_tree",
    "expertise",
    "extract_answer",
    "extract_o_vector",
    "find_experts",
    "finetune",
    "fit_task",
    "freeze_except_ffn",
    "hooked",
    "lape",
    "load_artifact",
    "load_baselines",
    "load_model",
    "logit_lens",
    "model_info",
    "patch_o_vector",
    "perplexity",
    "record",
    "register_arch",
    "register_intervention",
    "register_method",
    "responses",
    "score_relation",
    "select_layers",
    "set_arch",
    "steering_plan",
    "trace",
    "train_scaling",
]
