"""One resolved model: a model's ArchSpec is found once and the model carries it (models/resolve.py)."""

import copy

import torch

import neuronlab as nl
from neuronlab.models import resolve
from neuronlab.testing import char_tokenizer, tiny_causal_lm

TEXTS = {"en": ["the cat sat on the mat", "a dog ran"], "fr": ["le chat est sur le tapis", "un chien"]}


def test_a_model_outside_the_table_is_derived_once_through_a_whole_run(monkeypatch):
    model, tok = tiny_causal_lm("llama", 0, layers=2, spread=0.3), char_tokenizer()
    model.config.model_type = "my_llama"  # not in the table: derived and proven on the first use
    calls = []
    derive = resolve.derive_spec
    monkeypatch.setattr(resolve, "derive_spec", lambda m: calls.append(1) or derive(m))
    stats = nl.record(model, tok, TEXTS, site="act", pooled_texts=2, progress=False)
    ns = nl.lape(stats, top_rate=0.2)
    with nl.apply(model, nl.steering_plan(ns, "fr", "p_max", stats=stats)):
        nl.perplexity(model, tok, TEXTS["en"])
    nl.bake(model, nl.Plan([nl.Zero(neurons=ns.subset(["fr"]))]))
    with nl.trace(model, ["layers.1.act"]) as tr:
        model(**tok("hello", return_tensors="pt"))
    assert calls == [1] and tr[nl.Site(1, "act")].shape[-1] == 64
    spec = nl.arch_spec(model)
    assert copy.deepcopy(model).__dict__[resolve.CARRIED] == spec  # a copy carries it too: nothing derived again
    assert calls == [1] and "_neuronlab_arch" not in dict(model.named_parameters())


def test_a_spec_set_by_hand_wins_over_the_table_and_is_checked():
    model = tiny_causal_lm("gpt2", 0, layers=2)
    own = nl.ArchSpec(**{**nl.ARCH_SPECS["gpt2"].__dict__, "ffn_out": "mlp.c_proj"})
    assert nl.arch_spec(model) is nl.ARCH_SPECS["gpt2"]
    assert nl.set_arch(model, own) is own and nl.arch_spec(model) is own
    with nl.trace(model, ["layers.0.ffn_out"]) as tr:
        model(input_ids=torch.tensor([[5, 6, 7]]))
    assert tr[nl.Site(0, "ffn_out")].shape == (1, 3, 32)
    try:
        nl.set_arch(model, "llama")  # type: ignore[arg-type]
    except nl.NeuronlabError as err:
        assert "takes an ArchSpec" in str(err)
    else:
        raise AssertionError("set_arch took a string")


def test_load_model_carries_the_spec_it_was_given(tmp_path):
    model = tiny_causal_lm("gpt2", 0, layers=2)
    model.save_pretrained(tmp_path)
    char_tokenizer().save_pretrained(tmp_path)
    own = nl.ArchSpec(**{**nl.ARCH_SPECS["gpt2"].__dict__, "ffn_out": "mlp.c_proj"})
    loaded, _ = nl.load_model(tmp_path, arch=own)
    assert nl.arch_spec(loaded) is own
