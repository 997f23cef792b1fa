"""apply and bake: checked against the model's own numerics and against weights edited by hand."""

import pytest
import torch
import torch.nn.functional as F

import neuronlab as nl
from neuronlab.models.sites import Site

from ..conftest import ARCHS, tiny_model

IDS = torch.tensor([[1, 5, 9, 14, 22, 30, 41], [1, 7, 8, 9, 10, 11, 12]])


def logits(model, **kw):
    with torch.no_grad():
        return model(input_ids=IDS, **kw).logits


def read(model, site, ids=IDS):
    got = {}
    with torch.no_grad(), nl.hooked(model, {site: lambda h: got.setdefault("h", h.clone())}):
        model(input_ids=ids)
    return got["h"]


@pytest.mark.parametrize("arch", ARCHS)
def test_empty_plan_is_bit_identical_and_scaling_equals_baking(arch):
    model = tiny_model(arch)
    plain = logits(model)
    with nl.apply(model, nl.Plan([])):
        assert torch.equal(logits(model), plain)
    ns = nl.NeuronSet({"fr": {0: [1, 5, 9], 2: [0, 3]}, "de": {2: [3, 7]}})
    plan = nl.Plan([nl.Scale(factor=3.0, neurons=ns), nl.Zero(site="neuron", neurons=[2, 4], layers=[1])])
    with nl.apply(model, plan):
        hooked = logits(model)
    assert not torch.allclose(hooked, plain)
    baked = nl.bake(model, plan)
    torch.testing.assert_close(logits(baked), hooked, rtol=1e-4, atol=1e-4)
    assert torch.equal(logits(model), plain)  # the original is untouched and its hooks are gone
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_scale_matches_a_hand_edited_down_projection():
    """Scaling llama neurons at `act` = scaling those columns of down_proj, written out here."""
    model, edited = tiny_model("llama"), tiny_model("llama")
    with torch.no_grad():
        edited.model.layers[1].mlp.down_proj.weight[:, [4, 10]] *= -2.0
    plan = nl.Plan([nl.Scale(factor=-2.0, neurons=[4, 10], layers=[1])])
    with nl.apply(model, plan):
        torch.testing.assert_close(logits(model), logits(edited), rtol=1e-5, atol=1e-5)


def test_set_add_zero_write_exactly_those_values():
    model = tiny_model("gpt2")
    before = read(model, Site(1, "act"))
    values = torch.tensor([0.5, -1.0, 2.0])
    plan = nl.Plan([nl.Set(value=values, neurons=[3, 8, 20], layers=[1])])
    with nl.apply(model, plan):
        after = read(model, Site(1, "neuron"))  # gpt2: the neuron is the activation
    assert torch.equal(after[..., [3, 8, 20]], values.expand(2, 7, 3))
    keep = [i for i in range(after.shape[-1]) if i not in (3, 8, 20)]
    torch.testing.assert_close(after[..., keep], before[..., keep], rtol=0, atol=0)

    vec = torch.randn(32)
    with nl.apply(model, [nl.Add(value=vec, site="ffn_out", layers=[0], positions="last")]):
        out = read(model, Site(0, "ffn_out"))
    base = read(model, Site(0, "ffn_out"))
    torch.testing.assert_close(out[:, -1], base[:, -1] + vec)
    torch.testing.assert_close(out[:, :-1], base[:, :-1], rtol=0, atol=0)

    with nl.apply(model, [nl.Zero(site="resid", layers=[2], positions=slice(2, 4))]):
        out = read(model, Site(2, "resid"))
    assert out[:, 2:4].abs().max() == 0 and out[:, 4:].abs().min() > 0

    mask = torch.zeros(7, dtype=torch.bool)
    mask[[0, 6]] = True
    with nl.apply(model, [nl.Set(value={0: 1.5, 2: 2.5}, neurons=[1], layers=[0, 2], positions=mask)]):
        a0, a2 = read(model, Site(0, "act")), read(model, Site(2, "act"))
    assert torch.all(a0[:, [0, 6], 1] == 1.5) and torch.all(a2[:, [0, 6], 1] == 2.5)
    assert torch.all(a0[:, 1:6, 1] != 1.5)


def test_zeroing_all_ffn_outputs_equals_zeroed_weights():
    model, edited = tiny_model("opt"), tiny_model("opt")
    with torch.no_grad():
        for layer in edited.model.decoder.layers:
            layer.fc2.weight.zero_()
            layer.fc2.bias.zero_()
    with nl.apply(model, [nl.Zero(site="ffn_out")]):
        torch.testing.assert_close(logits(model), logits(edited), rtol=1e-5, atol=1e-5)


def test_last_position_follows_the_attention_mask():
    model = tiny_model("llama")
    mask = torch.ones_like(IDS)
    mask[1, 4:] = 0  # row 1 is right-padded: its last real token is at 3
    seen = {}
    keep = lambda key: lambda h: seen.setdefault(key, h.clone())  # noqa: E731
    with torch.no_grad():
        with nl.hooked(model, {Site(0, "act"): keep("plain")}):
            model(input_ids=IDS, attention_mask=mask)
        with nl.apply(model, [nl.Set(value=7.0, neurons=[0], layers=[0], positions="last")]):
            with nl.hooked(model, {Site(0, "act"): keep("set")}):  # runs after the edit (install order)
                model(input_ids=IDS, attention_mask=mask)
    changed = seen["set"] != seen["plain"]
    assert changed.nonzero().tolist() == [[0, 6, 0], [1, 3, 0]]
    assert seen["set"][0, 6, 0] == 7.0 and seen["set"][1, 3, 0] == 7.0


def test_generation_changes_the_prompt_end_and_every_new_token():
    model = tiny_model("llama")
    prompt = IDS[:1]
    seen = []
    plan = [nl.Set(value=5.0, neurons=[2], layers=[0], positions="last")]
    with torch.no_grad(), nl.apply(model, plan), nl.hooked(model, {Site(1, "act"): lambda h: None}):
        with nl.hooked(model, {Site(0, "neuron"): lambda h: seen.append(h.clone())}):
            out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=4, do_sample=False)
    assert out.shape[1] == prompt.shape[1] + 4
    assert len(seen) == 4 and seen[0].shape[1] == prompt.shape[1] and all(s.shape[1] == 1 for s in seen[1:])
    # plain greedy decoding with the same plan and no cache gives the same tokens
    ids = prompt
    with torch.no_grad(), nl.apply(model, plan):
        for _ in range(4):
            nxt = model(input_ids=ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], dim=1)
    # "last" without a cache changes only the final position each step, as with the cache
    assert torch.equal(ids, out)


def test_slices_count_absolute_positions_while_generating():
    model = tiny_model("llama")
    prompt = IDS[:1, :4]
    plan = [nl.Set(value=3.0, neurons=[0], layers=[0], positions=slice(5, 6))]
    seen = []
    with torch.no_grad(), nl.apply(model, plan):
        with nl.hooked(model, {Site(0, "act"): lambda h: seen.append(h[0, :, 0].clone())}):
            model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=3, do_sample=False)
    # calls: prompt (positions 0-3), then positions 4, 5, 6: only position 5 is set
    assert [s.shape[0] for s in seen] == [4, 1, 1]
    assert seen[2].item() == 3.0 and seen[1].item() != 3.0 and (seen[0] != 3.0).all()


def test_hooks_are_removed_when_the_block_raises():
    model = tiny_model("llama")
    with pytest.raises(RuntimeError, match="inside"), nl.apply(model, [nl.Scale(factor=2.0)]):
        raise RuntimeError("inside")
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_bad_plans_fail_before_running():
    model = tiny_model("llama")
    with pytest.raises(nl.NeuronlabError, match="neuron index 64 is out of range"):
        with nl.apply(model, [nl.Scale(factor=2.0, neurons=[1, 64])]):
            pass
    with pytest.raises(nl.NeuronlabError, match="layer 3 is out of range"), nl.apply(model, [nl.Zero(layers=[3])]):
        pass
    with pytest.raises(nl.NeuronlabError, match="shape"):
        with nl.apply(model, [nl.Set(value=torch.zeros(3), neurons=[1, 2])]):
            pass
    with pytest.raises(nl.NeuronlabError, match="positions"):
        nl.Scale(factor=2.0, positions="first")
    with pytest.raises(nl.NeuronlabError, match="bake cannot express Add"):
        nl.bake(model, nl.Plan([nl.Add(value=1.0)]))
    with pytest.raises(nl.NeuronlabError, match="chosen positions"):
        nl.bake(model, nl.Plan([nl.Scale(factor=2.0, positions="last")]))


def test_plans_save_and_load(tmp_path):
    ns = nl.NeuronSet({"fr": {0: [1, 5]}}, meta={"method": "test"})
    plan = nl.Plan(
        [
            nl.Scale(factor=2.0, neurons=ns),
            nl.Set(value={0: torch.tensor([0.5, 1.0])}, neurons=[3, 4], layers=[0], positions=slice(1, None)),
            nl.Add(value=torch.ones(32), site="ffn_out", layers=[1], positions="last"),
            nl.Zero(site="resid", positions=torch.tensor([True, False])),
        ]
    )
    plan.save(tmp_path / "plan.json")
    again = nl.Plan.load(tmp_path / "plan.json")
    model = tiny_model("llama")
    with nl.apply(model, plan):
        a = logits(model)
    with nl.apply(model, again):
        b = logits(model)
    assert torch.equal(a, b)
    assert [type(iv).__name__ for iv in again] == ["Scale", "Set", "Add", "Zero"]


def test_baked_model_saves_as_a_plain_checkpoint(tmp_path):
    from transformers import AutoModelForCausalLM

    model = tiny_model("gpt2")  # Conv1D stores the down projection transposed
    plan = nl.Plan([nl.Scale(factor=0.5, neurons=[0, 3, 7], layers=[0, 2])])
    nl.bake(model, plan).save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with nl.apply(model, plan):
        torch.testing.assert_close(logits(reloaded), logits(model), rtol=1e-5, atol=1e-5)
    assert F.mse_loss(logits(reloaded), logits(model)) > 0
    assert "neuronlab" not in (tmp_path / "config.json").read_text()  # nothing a serving engine would not know


def test_plan_tensors_live_in_safetensors_and_bad_files_fail_clearly(tmp_path):
    import json

    big = torch.randn(32)
    plan = nl.Plan(
        [
            nl.Add(value=big, site="ffn_out", layers=[1]),
            nl.Scale(factor=torch.tensor([0.5, 2.0]), positions=slice(-2, None)),
        ]
    )
    plan.save(tmp_path / "plan.json")
    data = json.loads((tmp_path / "plan.json").read_text())
    assert (
        data["tensors"] == "plan.safetensors"
        and "tensor_ref" in json.dumps(data)
        and '"tensor"' not in json.dumps(data)
    )
    back = nl.Plan.load(tmp_path / "plan.json")
    assert torch.equal(back.interventions[0].value, big) and torch.equal(
        back.interventions[1].factor, plan.interventions[1].factor
    )
    assert "Add on ffn_out" in back.summary()
    cases = {
        "broken.json": "{not json",
        "kind.json": json.dumps({"format": "neuronlab.plan/2", "interventions": [{"kind": "Nope"}]}),
        "field.json": json.dumps({"format": "neuronlab.plan/2", "interventions": [{"kind": "Scale", "fctor": 2}]}),
        "list.json": json.dumps({"format": "neuronlab.plan/2", "interventions": 3}),
        "ref.json": json.dumps(
            {"format": "neuronlab.plan/2", "interventions": [{"kind": "Add", "value": {"tensor_ref": "t9"}}]}
        ),
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(nl.NeuronlabError, match=name):
            nl.Plan.load(tmp_path / name)
    (tmp_path / "plan.safetensors").unlink()
    with pytest.raises(nl.NeuronlabError, match="no plan tensors file"):
        nl.Plan.load(tmp_path / "plan.json")


def test_one_factor_per_position_aligned_at_the_end_of_the_slice():
    model = tiny_model("gpt2")
    ids = torch.tensor([[5, 6, 7, 8, 9]])

    def by_hand(h):
        h = h.clone()
        h[:, -2] *= 0.5
        h[:, -1] *= 3.0
        return h

    with torch.no_grad(), nl.hooked(model, {nl.Site(1, "ffn_out"): by_hand}):
        expected = model(input_ids=ids).logits
    plan = nl.Plan([nl.Scale(factor=torch.tensor([0.5, 3.0]), site="ffn_out", layers=[1], positions=slice(-2, None))])
    with torch.no_grad(), nl.apply(model, plan):
        assert torch.allclose(model(input_ids=ids).logits, expected, atol=1e-6)
    with pytest.raises(nl.NeuronlabError, match="needs positions=slice"):
        with nl.apply(model, nl.Plan([nl.Scale(factor=torch.tensor([0.5, 3.0]))])):
            model(input_ids=ids)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_positions_while_generating_equal_a_full_rerun_without_cache(arch):
    """Left-padded prompts of different lengths, generated with the KV cache under a position-sliced and a "last"
    plan: the logits of every step equal a rerun of the whole sequence without a cache under the same change at the
    same absolute positions ("last" with a cache: the prompt's end, then every new token)."""
    model = tiny_model(arch)
    ids = torch.tensor([[0, 0, 0, 5, 9, 14], [0, 7, 8, 9, 10, 11], [1, 3, 4, 6, 12, 13]])
    mask = (torch.arange(6)[None, :] >= torch.tensor([3, 1, 0])[:, None]).long()  # left padding: 3, 1, 0 tokens
    steps, p = 4, ids.shape[1]
    plans = {  # the plan under generation, and the same change written over absolute positions for the rerun
        "slice": (
            [nl.Set(value=3.0, neurons=[0, 5], layers=[0], positions=slice(4, p + 2))],
            [nl.Set(value=3.0, neurons=[0, 5], layers=[0], positions=slice(4, p + 2))],
        ),
        "last": (
            [nl.Scale(factor=-4.0, site="ffn_out", layers=[1], positions="last")],
            [nl.Scale(factor=-4.0, site="ffn_out", layers=[1], positions=slice(p - 1, None))],
        ),
    }
    offsets = []
    spy = model.register_forward_pre_hook(
        lambda _m, args, kwargs: offsets.append(nl.intervene.apply.cached_tokens(args, kwargs)), with_kwargs=True
    )
    for name, (plan, same) in plans.items():
        offsets.clear()
        with torch.no_grad(), nl.apply(model, plan):
            out = model.generate(
                ids,
                attention_mask=mask,
                max_new_tokens=steps,
                do_sample=False,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=0,
            )
        assert offsets == [0, *list(range(p, p + steps - 1))], f"{name}: transformers passed {offsets}"
        seq = out.sequences
        for step in range(steps):
            full = seq[:, : p + step]
            full_mask = torch.cat([mask, torch.ones(3, step, dtype=mask.dtype)], 1)
            positions = (full_mask.cumsum(-1) - 1).masked_fill(full_mask == 0, 1)
            with torch.no_grad(), nl.apply(model, same):
                ref = model(input_ids=full, attention_mask=full_mask, position_ids=positions, use_cache=False).logits
            torch.testing.assert_close(out.logits[step], ref[:, -1], rtol=1e-4, atol=1e-4, msg=f"{name} step {step}")
            with torch.no_grad():
                plain = model(input_ids=full, attention_mask=full_mask, position_ids=positions, use_cache=False).logits
            if step in (0, 1):  # the change reaches the scored position: the comparison can fail
                assert not torch.allclose(plain[:, -1], ref[:, -1], atol=1e-3), f"{name} step {step} changed nothing"
    spy.remove()


def test_an_unreadable_cache_is_refused_not_counted_from_zero():
    from neuronlab.intervene.apply import cached_tokens

    class Opaque:  # a cache object with no length transformers' classes would give
        pass

    ids = torch.ones(2, 1, dtype=torch.long)
    assert cached_tokens((), {"input_ids": ids, "cache": Opaque(), "attention_mask": torch.ones(2, 6)}) == 5
    assert cached_tokens((), {"input_ids": ids, "cache_position": torch.tensor([7])}) == 7
    assert (
        cached_tokens((), {"input_ids": ids, "past_key_values": Opaque(), "position_ids": torch.tensor([[3], [5]])})
        == 5
    )
    assert cached_tokens((ids,), {}) == 0
    with pytest.raises(nl.NeuronlabError, match=r"transformers .* cannot read|cannot read .* transformers"):
        cached_tokens((), {"input_ids": ids, "cache": Opaque()})
