"""The neurons of a mixture of experts (issue 31, first part): on every family whose experts are served (fused
under transformers 5, lists of expert MLPs under transformers 4), the experts computed through neuronlab's loop give
the model's own logits and a zeroed neuron equals its column of the down projection removed; recorded statistics
equal neurons computed by hand (numpy) from the experts' own inputs and weights; a planted language expert and a
planted language neuron inside an expert are what LAPE finds, on both transformers legs."""

import json

import numpy as np
import pytest
import torch
import transformers

import neuronlab as nl
from neuronlab.errors import NeuronlabError
from neuronlab.models.moe import down_weight, expert_neurons, experts_by_layer
from neuronlab.models.moe_check import check_experts
from neuronlab.models.sites import decoder_layers
from neuronlab.record.expert_stats import ExpertStats
from neuronlab.record.moe import record_experts
from neuronlab.select.moe import moe_lape
from neuronlab.testing import char_tokenizer, tiny_causal_lm

FUSED = int(transformers.__version__.split(".")[0]) >= 5  # transformers 5: fused experts; 4: lists of MLPs
SERVED = [
    "mixtral",
    "qwen2_moe",
    "qwen3_moe",
    "olmoe",
    "gpt_oss",
    "deepseek_v2",
    "deepseek_v3",
    "granitemoe",
    "granitemoeshared",
    "ernie4_5_moe",
    "glm4_moe",
    "dots1",
    "hunyuan_v1_moe",
    "phimoe",
    "flex_olmo",
    "llama4_text",
]
if not FUSED:  # transformers 4: gpt_oss's and granitemoe's experts are fused without the experts implementation
    SERVED = [m for m in SERVED if m not in ("gpt_oss", "granitemoe", "granitemoeshared", "flex_olmo")]
only_fused = pytest.mark.skipif(not FUSED, reason="gpt-oss's experts are served from transformers 5")
TEXTS = {"en": ["the cat sat on the mat", "a dog ran"], "fr": ["le chat est sur le tapis", "un chien"]}


@pytest.mark.parametrize(
    "model_type", [m if m in ("mixtral", "qwen3_moe") else pytest.param(m, marks=pytest.mark.slow) for m in SERVED]
)
def test_the_loop_gives_the_models_own_logits_and_a_zeroed_neuron_is_its_column_removed(model_type):
    model = tiny_causal_lm(model_type, spread=0.3)
    layouts = check_experts(model)
    assert layouts and all(lay.experts >= 2 and lay.d_ff >= 1 for lay in layouts.values())


def test_models_without_fused_experts_are_refused_by_name():
    with pytest.raises(NeuronlabError, match="not a mixture of experts"):
        experts_by_layer(tiny_causal_lm("llama"))
    with pytest.raises(NeuronlabError, match="JetMoE's experts are not served"):
        experts_by_layer(tiny_causal_lm("jetmoe"))
    if not FUSED:
        with pytest.raises(NeuronlabError, match="neither one fused module"):
            experts_by_layer(tiny_causal_lm("gpt_oss"))


def _silu(x):
    return x / (1 + np.exp(-x))


def _gate_up(model, layer: int, e: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Expert e's gate and up weights [d_ff, d] (views: writing into them changes the model)."""
    lay = experts_by_layer(model)[layer]
    module = decoder_layers(model)[layer].get_submodule(lay.path)
    if lay.names is not None:
        return getattr(module[e], lay.names[0]).weight, getattr(module[e], lay.names[1]).weight
    return module.gate_up_proj[e][: lay.d_ff], module.gate_up_proj[e][lay.d_ff :]


def _by_hand(model, layer: int, x: np.ndarray, e: int, model_type: str) -> np.ndarray:
    """Expert e's neurons for inputs x [tokens, d], from its weights (numpy)."""
    if model_type == "gpt_oss":  # [d, 2 d_ff], gate and up interleaved, biased, clamped GLU (alpha 1.702, limit 7)
        module = decoder_layers(model)[layer].mlp.experts
        w = module.gate_up_proj[e].detach().double().numpy()
        both = x @ w + module.gate_up_proj_bias[e].detach().double().numpy()
        gate, up = np.minimum(both[:, ::2], 7.0), np.clip(both[:, 1::2], -7.0, 7.0)
        return (up + 1) * gate / (1 + np.exp(-1.702 * gate))
    gate, up = (w.detach().double().numpy() for w in _gate_up(model, layer, e))
    return _silu(x @ gate.T) * (x @ up.T)


def _routed_inputs(model, ids: torch.Tensor) -> dict[int, tuple[np.ndarray, list[np.ndarray]]]:
    """Per MoE layer: the block's input rows [tokens, d] and, per expert, the token positions routed to it, read
    from plain hooks (the experts module's arguments; under transformers 4, each expert's input rows, matched to
    the block's rows by equality)."""
    layouts, layers, seen = experts_by_layer(model), decoder_layers(model), {}
    handles = []

    def keep(i, key, value):
        seen.setdefault(i, {})[key] = value

    for i, lay in layouts.items():
        module = layers[i].get_submodule(lay.path)
        block = layers[i].get_submodule(lay.path.rpartition(".")[0])
        hook = lambda m, a, k, i=i: keep(i, "rows", a[0] if a else k["hidden_states"])  # noqa: E731
        handles.append(block.register_forward_pre_hook(hook, with_kwargs=True))
        if lay.names is None:
            handles.append(module.register_forward_pre_hook(lambda m, a, i=i: keep(i, "index", a[1])))
        else:
            for e, expert in enumerate(module):
                handles.append(expert.register_forward_pre_hook(lambda m, a, i=i, e=e: keep(i, e, a[0])))
    try:
        with torch.no_grad():
            model(input_ids=ids)
    finally:
        for h in handles:
            h.remove()
    out = {}
    for i, got in seen.items():
        rows = got["rows"].reshape(-1, got["rows"].shape[-1]).double().numpy()
        if "index" in got:
            index = got["index"].numpy()
            positions = [np.nonzero((index == e).any(-1))[0] for e in range(layouts[i].experts)]
        else:
            positions = []
            for e in range(layouts[i].experts):
                xs = got[e].reshape(-1, rows.shape[1]).double().numpy() if e in got else np.zeros((0, rows.shape[1]))
                positions.append(np.array([np.nonzero((rows == x).all(-1))[0][0] for x in xs], dtype=int))
        out[i] = (rows, positions)
    return out


@pytest.mark.parametrize(
    "model_type", ["mixtral", "deepseek_v3", "qwen2_moe", pytest.param("gpt_oss", marks=only_fused)]
)
def test_recorded_expert_statistics_equal_neurons_computed_by_hand(model_type):
    model, tok = tiny_causal_lm(model_type, spread=0.3), char_tokenizer()
    stats = record_experts(model, tok, TEXTS, batch_size=2, progress=False)
    assert stats.layers == sorted(experts_by_layer(model))
    for g, texts in enumerate(TEXTS.values()):  # one text at a time: no padding; BOS (position 0) is not counted
        assert int(stats.tokens[g]) == sum(len(t) for t in texts)
        routed, sums = np.zeros(stats.routed.shape[1:]), np.zeros(stats.sum.shape[1:])
        active = np.zeros(stats.sum.shape[1:])
        shared = None if stats.shared_sum is None else np.zeros(stats.shared_sum.shape[1:])
        for text in texts:
            for layer, (rows, positions) in _routed_inputs(model, torch.tensor([tok(text)["input_ids"]])).items():
                row = stats.layers.index(layer)
                if shared is not None:  # every counted token reaches the shared expert
                    mlp = decoder_layers(model)[layer].get_submodule(experts_by_layer(model)[layer].shared)
                    gate, up = (mlp.get_submodule(n).weight.detach().double().numpy() for n in ("gate_proj", "up_proj"))
                    shared[row] += (_silu(rows[1:] @ gate.T) * (rows[1:] @ up.T)).sum(0)
                for e, at in enumerate(positions):
                    at = at[at > 0]
                    h = _by_hand(model, layer, rows[at], e, model_type)
                    routed[row, e] += len(at)
                    sums[row, e] += h.sum(0)
                    active[row, e] += (h > 0).sum(0)
        if shared is not None:
            np.testing.assert_allclose(stats.shared_sum[g].numpy(), shared, rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(stats.routed[g].numpy(), routed)
        np.testing.assert_allclose(stats.sum[g].numpy(), sums, rtol=1e-4, atol=1e-4)
        close = np.abs(sums) > 0  # sign ties at exactly 0 aside, the firing counts are the same
        assert np.abs(stats.active[g].numpy() - active)[close].max() <= 1
    k = model.config.num_experts_per_tok
    assert (stats.routed.sum(-1) == k * stats.tokens[:, None]).all()  # every counted token reaches k experts
    assert (stats.shared_sum is not None) == (model_type in ("deepseek_v3", "qwen2_moe"))  # their shared experts
    assert bool(stats.weight.isnan().all()) != FUSED  # router weights: seen by fused experts only


def _planted(router_rows: dict[int, torch.Tensor]):
    """A 2-layer tiny Mixtral whose layer 0 sees only the token embedding (attention output zeroed): "a"/"b" are
    embedded as +e0 + e1, "x"/"y" as -e0 + e1, BOS as e1 + e2; `router_rows` sets rows of layer 0's router (row 3
    is 2 e2 unless given: BOS goes to experts 2 and 3 where row 2 reads e1)."""
    model, tok = tiny_causal_lm("mixtral", spread=0.3), char_tokenizer()
    d = model.config.hidden_size
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        for ch, sign in (("a", 1), ("b", 1), ("x", -1), ("y", -1)):
            emb[tok.convert_tokens_to_ids(ch)] = torch.zeros(d)
            emb[tok.convert_tokens_to_ids(ch), 0] = sign
            emb[tok.convert_tokens_to_ids(ch), 1] = 1
        emb[tok.bos_token_id] = torch.eye(d)[1] + torch.eye(d)[2]
        layer = decoder_layers(model)[0]
        layer.self_attn.o_proj.weight.zero_()
        router = layer.get_submodule(nl.arch_spec(model).router).weight  # [experts, d]
        router.zero_()
        for e, row in {3: 2 * torch.eye(d)[2], **router_rows}.items():
            router[e] = row
    return model, tok


PLANTED = {"A": ["abba", "baabab", "aab"], "B": ["xyyx", "yxxy", "xxy"]}


def test_a_planted_language_expert_is_found_by_routing_frequency():
    e0, e1 = torch.eye(32)[0], torch.eye(32)[1]
    model, tok = _planted({0: 20 * e0, 1: -20 * e0, 2: 5 * e1})  # A -> {0, 2}, B -> {1, 2}, 3: never
    stats = record_experts(model, tok, PLANTED, progress=False)
    usage = stats.usage()[:, 0]
    assert usage[0].tolist()[:3] == [1.0, 0.0, 1.0] and usage[1].tolist()[:3] == [0.0, 1.0, 1.0]
    found = moe_lape(stats, over="experts", top_rate=2 / 8, filter_rate=0.5, activation_bar_ratio=0.5)
    assert found["languages"] == {"A": {0: [0]}, "B": {0: [1]}} and found["rate"] == "routed / tokens"


def test_a_planted_language_neuron_inside_an_expert_is_found_given_routing():
    e0, e1 = torch.eye(32)[0], torch.eye(32)[1]
    model, tok = _planted({2: 10 * e1, 3: 5 * e1})  # every token -> experts 2 and 3
    with torch.no_grad():  # no neuron of experts 2, 3 reads e0 (the language) but neuron 5 of expert 2
        for e in (2, 3):
            for w in _gate_up(model, 0, e):
                w[:, 0] = 0
        gate, up = _gate_up(model, 0, 2)
        gate[5], up[5] = 10 * e0, e1  # gate: fires for A only; up: positive for both
    stats = record_experts(model, tok, PLANTED, progress=False)
    assert stats.probability()[:, 0, 2, 5].tolist() == [1.0, 0.0]
    n = stats.active[0].numel()
    found = moe_lape(stats, over="neurons", top_rate=1 / n, filter_rate=0.5, activation_bar_ratio=0.5)
    assert found["languages"] == {"A": {0: [[2, 5]]}, "B": {}} and found["rate"] == "active / routed"


def test_zeroing_one_expert_neuron_changes_only_through_its_down_column():
    model, tok = tiny_causal_lm("qwen3_moe", spread=0.3), char_tokenizer()
    ids = torch.tensor([tok("the cat sat")["input_ids"]])

    def zero(layer, expert, tokens, weights, h):
        if (layer, expert) == (1, 3):
            h = h.clone()
            h[:, 7] = 0
            return h
        return None

    with torch.no_grad(), expert_neurons(model, zero):
        hooked = model(input_ids=ids).logits
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        down_weight(model, 1, 3)[0][:, 7] = 0
        removed = model(input_ids=ids).logits
    assert torch.allclose(hooked, removed, atol=1e-6) and not torch.allclose(hooked, plain, atol=1e-6)


def test_expert_stats_save_load_and_merge(tmp_path):
    model, tok = tiny_causal_lm("olmoe", spread=0.3), char_tokenizer()
    en = record_experts(model, tok, {"en": TEXTS["en"]}, progress=False)
    fr = record_experts(model, tok, {"fr": TEXTS["fr"]}, progress=False)
    both = record_experts(model, tok, TEXTS, progress=False)
    en.save(tmp_path / "en.safetensors")
    merged = ExpertStats.load(tmp_path / "en.safetensors").merge(fr)
    assert merged.groups == ["en", "fr"] and torch.equal(merged.active, both.active)
    assert torch.equal(merged.routed, both.routed) and torch.allclose(merged.sum, both.sum)


def test_the_command_line_records_and_finds_language_experts(tmp_path):
    from typer.testing import CliRunner

    from neuronlab.cli import app

    from ..conftest import save_tiny

    folder = save_tiny(tmp_path / "moe", "qwen3_moe")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for group, lines in TEXTS.items():
        (corpus / f"{group}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "experts.safetensors"
    run = CliRunner().invoke(
        app, ["moe", "record", "--model", str(folder), "--text-dir", str(corpus), "--out", str(out)]
    )
    assert run.exit_code == 0, run.output
    model, tok = tiny_causal_lm("qwen3_moe", layers=3, spread=0.3), char_tokenizer()
    want = record_experts(model, tok, TEXTS, progress=False)
    got = ExpertStats.load(out)
    assert got.groups == ["en", "fr"] and torch.equal(got.routed, want.routed) and torch.equal(got.active, want.active)
    found = tmp_path / "found.json"
    args = ["moe", "lape", str(out), "--over", "experts", "--top-rate", "0.25", "--out", str(found)]
    run = CliRunner().invoke(app, args)
    assert run.exit_code == 0, run.output
    assert json.loads(found.read_text())["languages"] == json.loads(
        json.dumps(moe_lape(want, "experts", top_rate=0.25)["languages"])
    )


@pytest.mark.parametrize("model_type", ["mixtral", pytest.param("gpt_oss", marks=only_fused)])
def test_edits_on_the_fly_and_baked_into_the_down_projection_agree(model_type):
    from neuronlab.intervene.moe import bake_expert_neurons, expert_edit

    model, tok = tiny_causal_lm(model_type, spread=0.3), char_tokenizer()
    ids = torch.tensor([tok("the cat sat on the mat")["input_ids"]])
    neurons = {"0": [[0, 1], [2, 5], [2, 6]], "1": [[3, 0]]}  # as JSON gives them
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        for mode, value in (("zero", 0.0), ("scale", 0.5)):
            with expert_neurons(model, expert_edit(neurons, mode, value)):
                hooked = model(input_ids=ids).logits
            baked = bake_expert_neurons(tiny_causal_lm(model_type, spread=0.3), neurons, value)(input_ids=ids).logits
            assert torch.allclose(hooked, baked, atol=1e-5) and not torch.allclose(hooked, plain, atol=1e-5)
        with expert_neurons(model, expert_edit(neurons, "add", 0.0)):  # adding 0 changes nothing
            assert torch.allclose(model(input_ids=ids).logits, plain, atol=1e-6)
    with pytest.raises(NeuronlabError, match="unknown mode"):
        expert_edit(neurons, "double")
    with pytest.raises(NeuronlabError, match="has 4 experts"):
        bake_expert_neurons(model, {0: [[9, 0]]})


def test_the_command_line_bakes_a_languages_expert_neurons(tmp_path):
    from typer.testing import CliRunner

    from neuronlab.cli import app
    from neuronlab.intervene.moe import bake_expert_neurons
    from neuronlab.models.load import load_model

    from ..conftest import save_tiny

    folder = save_tiny(tmp_path / "moe", "mixtral")
    found = tmp_path / "neurons.json"
    found.write_text(json.dumps({"over": "neurons", "languages": {"fr": {"1": [[2, 3], [0, 7]]}, "en": {}}}))
    out = tmp_path / "no-fr"
    args = ["moe", "bake", "--model", str(folder), "--neurons", str(found), "--language", "fr", "--out", str(out)]
    run = CliRunner().invoke(app, args)
    assert run.exit_code == 0 and "2 expert neurons of fr" in run.output, run.output
    baked, tok = load_model(out)
    want = bake_expert_neurons(load_model(folder)[0], {1: [[2, 3], [0, 7]]})
    ids = torch.tensor([tok("le chat")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(baked(input_ids=ids).logits, want(input_ids=ids).logits)
    run = CliRunner().invoke(app, [*args[:7], "de", "--out", str(tmp_path / "x")])
    assert run.exit_code != 0 and "no language 'de'" in run.output


@pytest.mark.parametrize("model_type", ["qwen3_moe", pytest.param("gpt_oss", marks=only_fused)])
def test_a_silenced_expert_is_its_down_projection_zeroed(model_type):
    model, tok = tiny_causal_lm(model_type, spread=0.3), char_tokenizer()
    ids = torch.tensor([tok("the cat sat on the mat")["input_ids"]])
    with torch.no_grad():
        with expert_neurons(model, skip={"1": [0, 2]}):
            silenced = model(input_ids=ids).logits
        for e in (0, 2):
            down_weight(model, 1, e)[0].zero_()
            if model_type == "gpt_oss":
                decoder_layers(model)[1].mlp.experts.down_proj_bias[e] = 0
        assert torch.allclose(silenced, model(input_ids=ids).logits, atol=1e-6)
    with pytest.raises(NeuronlabError, match="no experts in layers"):
        with expert_neurons(model, skip={7: [0]}):
            pass


def test_silencing_a_planted_language_expert_changes_that_language_only(tmp_path):
    from typer.testing import CliRunner

    from neuronlab.cli import app
    from neuronlab.evaluate.moe import expert_perplexity_matrix

    e0, e1 = torch.eye(32)[0], torch.eye(32)[1]
    model, tok = _planted({0: 20 * e0, 1: -20 * e0, 2: 5 * e1})  # A -> {0, 2}, B -> {1, 2}
    matrix = expert_perplexity_matrix(model, tok, PLANTED, {"A": {0: [0]}, "B": {"0": [1]}}, progress=False)
    change = matrix["change"]
    assert change["A"]["B"] == 0 and change["B"]["A"] == 0  # B's tokens never reach expert 0, nor A's expert 1
    assert change["A"]["A"] != 0 and change["B"]["B"] != 0
    folder = tmp_path / "planted"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    corpus = tmp_path / "held"
    corpus.mkdir()
    for group, lines in PLANTED.items():
        (corpus / f"{group}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    found = tmp_path / "experts.json"
    found.write_text(json.dumps({"over": "experts", "languages": {"A": {"0": [0]}, "B": {"0": [1]}}}))
    out = tmp_path / "matrix.json"
    args = ["moe", "deactivate", "--model", str(folder), "--experts", str(found), "--text-dir", str(corpus)]
    run = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert run.exit_code == 0, run.output
    saved = json.loads(out.read_text())
    assert saved["change"]["A"]["B"] == 0 and saved["change"]["A"]["A"] == pytest.approx(change["A"]["A"], rel=1e-5)
    run = CliRunner().invoke(app, [*args, "--out", str(out), "--how", "forbid"])
    assert run.exit_code == 0 and "A's experts forbidden" in run.output, run.output
    assert json.loads(out.read_text())["how"] == "forbid"


@pytest.mark.slow
def test_a_run_stopped_half_way_resumes_without_counting_a_text_twice(tmp_path, monkeypatch):
    from neuronlab.record import moe as moe_record

    model, tok = tiny_causal_lm("mixtral", spread=0.3), char_tokenizer()
    texts = {"en": [f"the cat {i} sat" for i in range(9)], "fr": [f"le chat {i}" for i in range(7)]}
    whole = record_experts(model, tok, texts, batch_size=2, progress=False)
    checkpoint = tmp_path / "experts.safetensors"
    real_model_inputs, calls = moe_record.model_inputs, []

    def stop_in_french(*args, **kwargs):  # the 8th batch: the 5th en batch is done, then 3 of fr
        calls.append(1)
        if len(calls) == 8:
            raise KeyboardInterrupt
        return real_model_inputs(*args, **kwargs)

    monkeypatch.setattr(moe_record, "model_inputs", stop_in_french)
    with pytest.raises(KeyboardInterrupt):
        record_experts(model, tok, texts, batch_size=2, progress=False, checkpoint=checkpoint, checkpoint_every=0)
    saved = ExpertStats.load(checkpoint)
    assert saved.meta["complete"] == ["en"] and int(saved.texts[1]) == 4  # 2 fr batches of 2 texts were saved
    monkeypatch.setattr(moe_record, "model_inputs", real_model_inputs)
    resumed = record_experts(model, tok, texts, batch_size=2, progress=False, checkpoint=checkpoint)
    assert torch.equal(resumed.tokens, whole.tokens) and torch.equal(resumed.routed, whole.routed)
    assert torch.equal(resumed.active, whole.active) and torch.allclose(resumed.sum, whole.sum)
    with pytest.raises(NeuronlabError, match="other groups or settings"):
        record_experts(model, tok, {"de": ["x"]}, progress=False, checkpoint=checkpoint)
    with pytest.raises(NeuronlabError, match="exists: pass --resume"):
        moe_record.record_experts_to_file(model, tok, texts, checkpoint)


def test_the_block_leaves_the_model_as_it_was():
    model = tiny_causal_lm(SERVED[0], spread=0.3)
    nl.arch_spec(model)  # the model carries its resolved spec from the first use on
    before = ({n: type(m) for n, m in model.named_modules()}, {k: set(m.__dict__) for k, m in model.named_modules()})
    with expert_neurons(model, lambda *a: None, skip={min(experts_by_layer(model)): [0]}):
        model(input_ids=torch.tensor([[1, 5, 9]]))
    after = ({n: type(m) for n, m in model.named_modules()}, {k: set(m.__dict__) for k, m in model.named_modules()})
    assert after == before


def _chosen(model, ids: torch.Tensor, layer: int, **route_args) -> list[set[int]]:
    """The experts each token of `ids` is routed to in `layer`, read through the loop (under `nl.route` if given)."""
    from contextlib import nullcontext

    tokens: list[set[int]] = [set() for _ in range(ids.numel())]

    def see(i, e, toks, w, h):
        if i == layer:
            for t in toks.tolist():
                tokens[t].add(e)

    with torch.no_grad(), nl.route(model, **route_args) if route_args else nullcontext(), expert_neurons(model, see):
        model(input_ids=ids)
    return tokens


@pytest.mark.parametrize(
    "model_type", ["mixtral", "qwen3_moe", "deepseek_v3", pytest.param("gpt_oss", marks=only_fused)]
)
def test_forcing_and_forbidding_an_expert_changes_the_routers_choice(model_type):
    from neuronlab.intervene.routing import _bias

    model = tiny_causal_lm(model_type, spread=0.3)
    ids = torch.tensor([[3, 9, 4, 17, 5, 8, 11, 12]])
    layer, k = max(experts_by_layer(model)), model.config.num_experts_per_tok
    plain = _chosen(model, ids, layer)
    experts = experts_by_layer(model)[layer].experts
    e = max(range(experts), key=lambda x: sum(x in c for c in plain))  # the expert most tokens use
    forbidden = _chosen(model, ids, layer, routes={layer: {e: "forbid"}})
    assert all(e not in c and len(c) == k for c in forbidden)
    assert all(e in c and len(c) == k for c in _chosen(model, ids, layer, routes={layer: {e: "force"}}))
    where = torch.zeros_like(ids, dtype=torch.bool)
    where[0, :3] = True
    router = decoder_layers(model)[layer].get_submodule(nl.arch_spec(model).router)
    if _bias(router) is not None:  # the choice is made on scores plus a bias shared by every token
        with pytest.raises(NeuronlabError, match="correction bias"):
            _chosen(model, ids, layer, routes={layer: {e: "forbid"}}, where=where)
    else:
        some = _chosen(model, ids, layer, routes={layer: {e: "forbid"}}, where=where)
        assert some[:3] == forbidden[:3] and some[3:] == plain[3:]
    with torch.no_grad():
        own = model(input_ids=ids).logits
        with nl.route(model, {layer: {e: 0.0}}):
            assert torch.equal(model(input_ids=ids).logits, own)  # the machinery alone changes nothing
        assert torch.equal(model(input_ids=ids).logits, own)  # and the bias is restored after


def test_forbidding_follows_the_routers_own_softmax_and_top_k():
    """Mixtral by hand (numpy): the router's logits from its own input with the forbidden column at -inf, softmax,
    top-k: the experts the loop then sees."""
    model = tiny_causal_lm("mixtral", spread=0.3)
    ids = torch.tensor([[3, 9, 4, 17, 5, 8, 11, 12]])
    router = decoder_layers(model)[1].get_submodule(nl.arch_spec(model).router)
    seen = {}
    handle = router.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0].reshape(-1, a[0].shape[-1])))
    try:
        forbidden = _chosen(model, ids, 1, routes={1: {2: "forbid", 0: "forbid"}})
    finally:
        handle.remove()
    logits = seen["x"].double().numpy() @ router.weight.detach().double().numpy().T
    logits[:, [0, 2]] = -np.inf
    expected = [set(np.argsort(-row)[: model.config.num_experts_per_tok].tolist()) for row in logits]
    assert forbidden == expected == [{1, 3}] * ids.numel()


def test_forbidden_experts_in_the_deactivation_matrix_and_bad_routes(tmp_path):
    from neuronlab.evaluate.moe import expert_perplexity_matrix

    e0, e1 = torch.eye(32)[0], torch.eye(32)[1]
    model, tok = _planted({0: 20 * e0, 1: -20 * e0, 2: 5 * e1})  # A -> {0, 2}, B -> {1, 2}
    found = {"A": {0: [0]}, "B": {0: [1]}}
    matrix = expert_perplexity_matrix(model, tok, PLANTED, found, progress=False, how="forbid")
    silenced = expert_perplexity_matrix(model, tok, PLANTED, found, progress=False)
    assert matrix["change"]["A"]["B"] == pytest.approx(0, abs=1e-6) and matrix["change"]["A"]["A"] != 0
    assert matrix["change"]["A"]["A"] != silenced["change"]["A"]["A"]  # another expert takes expert 0's place
    with pytest.raises(NeuronlabError, match=r"experts 0\.\.3, not 7"):
        with nl.route(model, {0: {7: "forbid"}}):
            pass
    with pytest.raises(NeuronlabError, match="unknown routing edit"):
        with nl.route(model, {0: {1: "ban"}}):
            pass
    with pytest.raises(NeuronlabError, match="needs a mixture of experts"):
        with nl.route(tiny_causal_lm("llama"), {0: {1: "forbid"}}):
            pass
    router = decoder_layers(model)[0].get_submodule(nl.arch_spec(model).router)
    hooks = (len(router._forward_pre_hooks), len(router._forward_hooks))
    with pytest.raises(NeuronlabError, match=r"experts 0\.\.3, not 9"):  # a bad route after a good one: nothing left
        with nl.route(model, {0: {1: "forbid"}, 1: {9: "forbid"}}):
            pass
    assert (len(router._forward_pre_hooks), len(router._forward_hooks)) == hooks

    def matmul_router(self, x):  # a router that computes its logits without F.linear: refused in its first forward
        logits = x.reshape(-1, x.shape[-1]) @ self.weight.T
        return logits, *torch.topk(logits.softmax(-1), 2, dim=-1)[::-1]

    import types

    router.forward = types.MethodType(matmul_router, router)
    try:
        with pytest.raises(NeuronlabError, match=r"does not compute its logits with F\.linear"):
            with nl.route(model, {0: {1: "forbid"}}), torch.no_grad():
                model(input_ids=torch.tensor([[3, 4, 5]]))
    finally:
        del router.forward


def _greedy_without_cache(model, ids: torch.Tensor, steps: int) -> torch.Tensor:
    """Greedy decoding by hand: the whole sequence again at each step, no cache."""
    with torch.no_grad():
        for _ in range(steps):
            ids = torch.cat([ids, model(input_ids=ids, use_cache=False).logits[:, -1:].argmax(-1)], dim=1)
    return ids


def test_expert_edits_and_routes_hold_at_every_step_of_generation_with_the_cache():
    """An expert-neuron edit and a forbidden expert act on every cached step as on the whole sequence recomputed."""
    model = tiny_causal_lm("mixtral", spread=0.3)
    ids = torch.tensor([[3, 9, 4, 17, 5]])
    layer = max(experts_by_layer(model))
    contexts = {
        "edit": lambda: expert_neurons(
            model, nl.expert_edit({layer: [[e, j] for e in range(4) for j in range(8)]}, "add", 3.0)
        ),
        "forbid": lambda: nl.route(model, {layer: {0: "forbid", 1: "forbid"}}),
    }
    with torch.no_grad():
        plain = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
    for name, within in contexts.items():
        with within(), torch.no_grad():
            cached = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
        with within():
            by_hand = _greedy_without_cache(model, ids, 6)
        assert torch.equal(cached, by_hand), name
        assert not torch.equal(cached, plain), name  # the edit changed what the model writes


@pytest.mark.parametrize("model_type", ["deepseek_v3", "qwen2_moe", "llama4_text"])
def test_shared_experts_are_neurons_of_their_own(model_type):
    """The shared expert (DeepSeek's shared_experts, Qwen-MoE's sigmoid-gated shared_expert, Llama 4's
    shared_expert) is expert SHARED (-1): its neurons equal act(gate x) * up x by hand (numpy) for every token, the
    block's output is the experts' plus the shared expert's, and zeroing a shared neuron, silencing the shared expert
    and baking agree with the model's own weights edited."""
    from neuronlab.models.moe import SHARED

    model = tiny_causal_lm(model_type, spread=0.3)
    layouts = check_experts(model)
    layer = min(layouts)
    lay = layouts[layer]
    assert lay.shared is not None and lay.adds_up in (True, None)  # None: transformers 4's lists of experts
    mlp = decoder_layers(model)[layer].get_submodule(lay.shared)
    block_in, seen = {}, {}
    hook = mlp.register_forward_pre_hook(lambda m, a: block_in.setdefault("x", a[0].reshape(-1, a[0].shape[-1])))
    ids = torch.tensor([[3, 9, 4, 17, 5, 8]])

    def keep(i, e, tokens, weights, h):
        if (i, e) == (layer, SHARED):
            seen["h"], seen["tokens"] = h.detach().clone(), tokens

    try:
        with torch.no_grad(), expert_neurons(model, keep, shared=True):
            model(input_ids=ids)
    finally:
        hook.remove()
    x = block_in["x"].double().numpy()
    gate, up = (mlp.get_submodule(n).weight.detach().double().numpy() for n in ("gate_proj", "up_proj"))
    np.testing.assert_allclose(seen["h"].double().numpy(), _silu(x @ gate.T) * (x @ up.T), rtol=1e-5, atol=1e-6)
    assert seen["tokens"].tolist() == list(range(ids.numel()))
    with torch.no_grad():
        with expert_neurons(model, skip={layer: [SHARED]}):
            silenced = model(input_ids=ids).logits
        with expert_neurons(model, nl.expert_edit({layer: [[SHARED, 1], [SHARED, 4]]}, "zero")):
            hooked = model(input_ids=ids).logits
        down = mlp.down_proj.weight
        saved = down.clone()
        down.zero_()
        torch.testing.assert_close(model(input_ids=ids).logits, silenced)
        down.copy_(saved)
        nl.bake_expert_neurons(model, {layer: [[SHARED, 1], [SHARED, 4]]})
        torch.testing.assert_close(model(input_ids=ids).logits, hooked)
        assert down[:, [1, 4]].abs().sum() == 0


def test_lape_finds_a_planted_shared_neuron_beside_the_routed_ones(tmp_path):
    """Stats made by hand: shared neuron 3 of layer 1 fires on 90% of A's tokens and never on B's; every routed
    neuron fires as often in both. LAPE over neurons finds exactly [SHARED, 3] for A; the stats save, load and merge
    with their shared tensors."""
    from neuronlab.models.moe import SHARED

    stats = ExpertStats.empty(["A", "B"], [1], 4, 8, {"model": {}}, shared_d_ff=6)
    stats.tokens[:] = 100
    stats.routed[:] = 50
    stats.active[:] = 20
    stats.shared_active[:] = 30
    stats.shared_active[0, 0, 3], stats.shared_active[1, 0, 3] = 90, 0
    found = moe_lape(stats, over="neurons", top_rate=0.03)["languages"]  # round(0.03 x 38 neurons) = 1
    assert found == {"A": {1: [[SHARED, 3]]}, "B": {}}
    stats.save(tmp_path / "s.safetensors")
    back = ExpertStats.load(tmp_path / "s.safetensors")
    assert torch.equal(back.shared_active, stats.shared_active) and "a shared expert of 6 neurons" in back.summary()
    assert torch.equal(back.merge(back).shared_active, 2 * stats.shared_active)
