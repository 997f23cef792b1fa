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
from neuronlab.evaluate.moe import expert_deactivation_to_file, expert_perplexity_matrix
from neuronlab.evaluate.perplexity import continuation_logprob, perplexity
from neuronlab.intervene.apply import apply
from neuronlab.intervene.bake import bake
from neuronlab.intervene.moe import bake_expert_neurons, bake_experts_to_folder, expert_edit
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
from neuronlab.intervene.routing import route
from neuronlab.intervene.steer import VARIANTS, expert_plan, steering_plan
from neuronlab.learn.finetune import Delta, FinetuneConfig, finetune, freeze_except_ffn
from neuronlab.learn.methods import LearnedIntervention, register_method
from neuronlab.learn.runs import fit_task
from neuronlab.learn.scalars import ScalingConfig, evaluate_scaling, train_scaling
from neuronlab.models.arch import ARCH_SPECS, ArchSpec, register_arch
from neuronlab.models.load import load_model, model_info
from neuronlab.models.moe import expert_neurons, experts_by_layer
from neuronlab.models.moe_check import check_experts
from neuronlab.models.resolve import arch_spec, set_arch
from neuronlab.models.sites import Site, hooked, trace
from neuronlab.record.expert_stats import ExpertStats
from neuronlab.record.moe import ExpertRecordConfig, record_experts, record_experts_to_file
from neuronlab.record.recorder import RecordConfig, record
from neuronlab.record.stats import Stats
from neuronlab.select.attribution import Attribution, AttributionConfig, attribute, attribution_neurons
from neuronlab.select.experts import Expertise, expertise, responses
from neuronlab.select.lape import LapeConfig, activated, activation_values, lape
from neuronlab.select.layers import LayerConfig, LayerSelection, select_layers
from neuronlab.select.moe import moe_lape, moe_lape_to_file
from neuronlab.select.neuron_set import NeuronSet
from neuronlab.select.ranking import auroc, average_precision

__version__ = "0.1.0"

from neuronlab.analyze.expert_study import steer_experts
from neuronlab.analyze.runs import run_arith_ablate, run_arith_extract, run_arith_patch, run_lens
from neuronlab.data.contrast import TASKS
from neuronlab.data.corpora import read_groups
from neuronlab.demo.pipeline import DEMO_MODEL, PipelineConfig, run_demo
from neuronlab.dist import setup_run
from neuronlab.evaluate.math import evaluate_math_dir
from neuronlab.evaluate.steering import generate_under_plans, steered_lss, steered_perplexity
from neuronlab.evaluate.translation import translate_files
from neuronlab.intervene.steer import target_plans
from neuronlab.io import check_writable
from neuronlab.learn.runs import run_scale_eval, run_scale_show, run_scale_task, run_scale_train
from neuronlab.learn.slam import run_finetune, run_layers, run_merge
from neuronlab.models.gguf import convert_gguf, packaged_models, packaged_path
from neuronlab.models.resolve import describe_arch
from neuronlab.record.recorder import check_checkpoint, record_to_file
from neuronlab.report.language import report_from_results, view_from_files
from neuronlab.select.runs import run_activated, run_attribution, run_lape
from neuronlab.study import STUDIES, study, study_all, study_page

__all__ = [
    "ARCH_SPECS",
    "DEMO_MODEL",
    "STUDIES",
    "TASKS",
    "VARIANTS",
    "Add",
    "ArchSpec",
    "Attribution",
    "AttributionConfig",
    "Delta",
    "DynScale",
    "ExpertRecordConfig",
    "ExpertStats",
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
    "PipelineConfig",
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
    "bake_expert_neurons",
    "bake_experts_to_folder",
    "check_checkpoint",
    "check_experts",
    "check_writable",
    "continuation_logprob",
    "convert_gguf",
    "describe",
    "describe_arch",
    "evaluate_math",
    "evaluate_math_dir",
    "evaluate_scaling",
    "expert_deactivation_to_file",
    "expert_edit",
    "expert_neurons",
    "expert_perplexity_matrix",
    "expert_plan",
    "expert_tree",
    "expertise",
    "experts_by_layer",
    "extract_answer",
    "extract_o_vector",
    "find_experts",
    "finetune",
    "fit_task",
    "freeze_except_ffn",
    "generate_under_plans",
    "hooked",
    "lape",
    "load_artifact",
    "load_baselines",
    "load_model",
    "logit_lens",
    "model_info",
    "moe_lape",
    "moe_lape_to_file",
    "packaged_models",
    "packaged_path",
    "patch_o_vector",
    "perplexity",
    "read_groups",
    "record",
    "record_experts",
    "record_experts_to_file",
    "record_to_file",
    "register_arch",
    "register_intervention",
    "register_method",
    "report_from_results",
    "responses",
    "route",
    "run_activated",
    "run_arith_ablate",
    "run_arith_extract",
    "run_arith_patch",
    "run_attribution",
    "run_demo",
    "run_finetune",
    "run_lape",
    "run_layers",
    "run_lens",
    "run_merge",
    "run_scale_eval",
    "run_scale_show",
    "run_scale_task",
    "run_scale_train",
    "score_relation",
    "select_layers",
    "set_arch",
    "setup_run",
    "steer_experts",
    "steered_lss",
    "steered_perplexity",
    "steering_plan",
    "study",
    "study_all",
    "study_page",
    "target_plans",
    "trace",
    "train_scaling",
    "translate_files",
    "view_from_files",
]
