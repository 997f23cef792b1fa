"""FFN-only fine-tuning: trainable shares of the paper, what is frozen per family, the Trainer run, the delta."""

import pytest
import torch
import transformers

import neuronlab as nl
from neuronlab.learn.finetune import Delta, encode_sft, ffn_parameters, merge, read_sft, trainable_share

from ..conftest import ARCHS, char_tokenizer, tiny_model


@pytest.mark.parametrize(
    "hidden, d_ff, layers, heads, share", [(4096, 11008, 32, 32, 0.080), (5120, 13824, 40, 40, 0.065)]
)
def test_llama2_shares_on_the_meta_device(hidden, d_ff, layers, heads, share):
    config = transformers.LlamaConfig(
        hidden_size=hidden,
        intermediate_size=d_ff,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        vocab_size=32000,
    )
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    n = nl.freeze_except_ffn(model, range(6), "up,down")
    assert n == 6 * 2 * hidden * d_ff and round(trainable_share(model, n), 3) == share
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == n


@pytest.mark.parametrize("arch", ARCHS)
def test_only_the_chosen_projections_train(arch):
    model = tiny_model(arch)
    n = nl.freeze_except_ffn(model, [1], "up,down")
    spec = nl.arch_spec(model)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.split(".").count("1") >= 1 for name in trainable)  # layer 1 only
    assert all(any(part in name for part in (spec.up, spec.down)) for name in trainable)
    gated = nl.freeze_except_ffn(model, [1], "gate,up,down")
    assert (gated > n) == (spec.gate is not None or spec.fused_gate_up)
    assert nl.freeze_except_ffn(model, [0], "all") == sum(p.numel() for p in model.parameters())


def test_phi3_fused_gate_up_trains_only_its_up_half(tok):
    model = tiny_model("phi3")
    n = nl.freeze_except_ffn(model, [0], "up,down")
    fused = model.model.layers[0].mlp.gate_up_proj.weight
    down = model.model.layers[0].mlp.down_proj.weight
    assert n == fused.numel() // 2 + down.numel()
    model(
        **tok("the cat sat", return_tensors="pt"), labels=tok("the cat sat", return_tensors="pt")["input_ids"]
    ).loss.backward()
    half = fused.shape[0] // 2
    assert fused.grad[:half].abs().sum() == 0 and fused.grad[half:].abs().sum() > 0


def test_sft_data_and_response_only_labels(tmp_path):
    tok = char_tokenizer()
    rows = encode_sft(tok, [{"prompt": "2+2", "response": "4"}], template="Q: {query} A:", cutoff=64)
    prompt_ids = tok("Q: 2+2 A:")["input_ids"]
    assert rows[0]["input_ids"][: len(prompt_ids)] == prompt_ids
    assert rows[0]["labels"] == [-100] * len(prompt_ids) + tok(" 4", add_special_tokens=False)["input_ids"] + [2]
    with pytest.raises(nl.NeuronlabError, match="cut-off"):
        encode_sft(tok, [{"prompt": "a long question", "response": "4"}], template="{query}", cutoff=5)
    (tmp_path / "bad.jsonl").write_text('{"question": "x", "answer": "1"}\n')
    with pytest.raises(nl.NeuronlabError, match=r"needs \{prompt, response\}"):
        read_sft(tmp_path / "bad.jsonl")
    (tmp_path / "ok.jsonl").write_text('{"instruction": "x", "output": "1"}\n')
    assert read_sft(tmp_path / "ok.jsonl") == [{"prompt": "x", "response": "1"}]


def test_finetune_changes_only_the_chosen_ffns_and_the_delta_round_trips(tmp_path, tok):
    model, base = tiny_model("llama"), tiny_model("llama")
    items = [{"prompt": f"{a}+{b}", "response": str(a + b)} for a in range(4) for b in range(4)]
    cfg = nl.FinetuneConfig(lr=1e-2, max_steps=4, batch_size=4, template="{query}=", save_steps=2)
    delta = nl.finetune(model, tok, items, [1], cfg, out=tmp_path / "run", progress=False)
    before, after = dict(base.named_parameters()), dict(model.named_parameters())
    changed = {n for n in after if not torch.equal(after[n], before[n])}
    assert changed == set(ffn_parameters(base, [1], "up,down")) == set(delta.tensors)
    assert delta.meta["steps"] == 4 and delta.meta["layers"] == [1] and 0 < delta.meta["share"] < 0.2
    loaded = Delta.load(tmp_path / "run")
    ids = tok("1+2=", return_tensors="pt")["input_ids"]
    merged = merge(tiny_model("llama"), loaded)
    with torch.no_grad():
        assert torch.equal(merged(ids).logits, model(ids).logits)
    merged.save_pretrained(tmp_path / "merged")
    plain = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        assert torch.allclose(plain(ids).logits, model(ids).logits, atol=1e-6)
    with pytest.raises(nl.NeuronlabError, match="made on another model"):
        loaded.apply(tiny_model("llama", seed=1))
    with pytest.raises(nl.NeuronlabError, match="made on another model"):
        loaded.apply(merged)  # already applied: no longer the base
    assert "layers [1]" in loaded.summary()
    assert any((tmp_path / "run" / "trainer").glob("checkpoint-*"))
