"""The logit lens at the last layer is the model's own next-token distribution, for every architecture."""

import pytest
import torch

from neuronlab.analyze.lens import logit_lens

from ..conftest import ARCHS, tiny_model

PROMPTS = ["the cat sat", "a much longer prompt than that", "x"]


@pytest.mark.parametrize("arch", ARCHS)
def test_last_layer_lens_equals_model_output(arch, tok):
    model = tiny_model(arch)
    if arch in ("gemma2", "gemma3_text"):
        model.config.final_logit_softcapping = 5.0  # make the soft-capping matter
    lens = logit_lens(model, tok, PROMPTS, targets=[" on", "!", "y"], k=3)
    last = lens["layers"][model.config.num_hidden_layers - 1]
    with torch.no_grad():  # each prompt alone: the model's own next-token distribution, no padding involved
        probs = torch.stack([model(**tok(p, return_tensors="pt")).logits[0, -1] for p in PROMPTS]).float().softmax(-1)
    for row, target in enumerate([" on", "!", "y"]):
        t = tok(target, add_special_tokens=False)["input_ids"][0]
        assert last["target_prob"][row] == pytest.approx(probs[row, t].item(), abs=1e-5)
        top_prob = probs[row].max().item()
        assert last["top"][row][0][1] == pytest.approx(top_prob, abs=1e-5)
        assert last["target_rank"][row] == int((probs[row] > probs[row, t]).sum())


def test_left_padded_batches_equal_prompts_run_alone(arch_model, tok):
    """Left padding must not shift positions (GPT-2 numbers the padding unless given position_ids)."""
    from neuronlab.analyze.arithmetic import _last_logits

    _, model = arch_model
    prompts, targets = ["ab", "a much longer prompt here"], ["c", "d"]
    with torch.no_grad():
        alone = torch.stack([model(**tok(p, return_tensors="pt")).logits[0, -1] for p in prompts])
    assert torch.allclose(_last_logits(model, tok, prompts, 8), alone, atol=1e-4)
    batched = logit_lens(model, tok, prompts, targets)["layers"][1]["target_prob"]
    single = [
        logit_lens(model, tok, [p], [t])["layers"][1]["target_prob"][0] for p, t in zip(prompts, targets, strict=True)
    ]
    assert batched == pytest.approx(single, abs=1e-5)
