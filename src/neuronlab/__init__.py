"""neuronlab: find, steer and tune the neurons of transformer language models.

    >>> import neuronlab as nl
    >>> model, tok = nl.load_model("path-or-hub-id")
    >>> stats = nl.record(model, tok, {"en": en_texts, "fr": fr_texts}, site="act")
    >>> plan = nl.Plan([nl.Scale(factor=2.0, site="act", neurons=ns.subset(["fr"]))])
    >>> with nl.apply(model, plan):
    ...     model(**batch)
"""

from neuronlab.errors import NeuronlabError
from neuronlab.intervene.apply import apply
from neuronlab.intervene.bake import bake
from neuronlab.intervene.plan import Add, DynScale, Intervention, LayerStat, Plan, Scale, Set, Zero
from neuronlab.models.arch import ARCH_SPECS, ArchSpec, arch_spec, register_arch
from neuronlab.models.load import load_model, model_info
from neuronlab.models.sites import Site, hooked, trace
from neuronlab.record.recorder import RecordConfig, record
from neuronlab.record.stats import Stats
from neuronlab.select.lape import LapeConfig, activated, activation_values, lape
from neuronlab.select.neuron_set import NeuronSet
from neuronlab.evaluate.perplexity import continuation_logprob, perplexity
from neuronlab.intervene.steer import VARIANTS, expert_plan, steering_plan
from neuronlab.learn.finetune import Delta, FinetuneConfig, finetune, freeze_except_ffn
from neuronlab.learn.methods import LearnedIntervention
from neuronlab.evaluate.math import extract_answer, evaluate_math
from neuronlab.select.layers import LayerConfig, LayerSelection, select_layers
from neuronlab.select.experts import Expertise, auroc, average_precision, expertise, responses
from neuronlab.learn.scalars import ScalingConfig, evaluate_scaling, train_scaling
from neuronlab.select.attribution import Attribution, AttributionConfig, attribute, attribution_neurons

__version__ = "0.1.0"

__all__ = [
    "ARCH_SPECS", "Add", "ArchSpec", "Intervention", "LayerStat", "NeuronSet", "NeuronlabError", "Plan", "Scale", "Set",
    "Site", "Stats", "trace", "Zero", "apply", "arch_spec", "bake", "hooked", "load_model", "model_info", "record",
    "register_arch", "lape", "activated", "activation_values", "perplexity", "continuation_logprob",
    "steering_plan", "VARIANTS", "select_layers", "LayerSelection", "LayerConfig", "freeze_except_ffn", "finetune",
    "FinetuneConfig", "Delta", "extract_answer", "evaluate_math", "Expertise", "average_precision", "auroc",
    "expertise", "responses", "expert_plan", "DynScale", "LearnedIntervention", "RecordConfig", "LapeConfig", "ScalingConfig", "train_scaling", "evaluate_scaling",
    "Attribution", "AttributionConfig", "attribute", "attribution_neurons",
]  # fmt: skip
