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
    tok.padding_side = "left"
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    tok.padding_side = "right"
    with torch.no_grad():
        probs = model(**enc).logits[:, -1].float().softmax(-1)
    for row, target in enumerate([" on", "!", "y"]):
        t = tok(target, add_special_tokens=False)["input_ids"][0]
        assert last["target_prob"][row] == pytest.approx(probs[row, t].item(), abs=1e-5)
        top_prob = probs[row].max().item()
        assert last["top"][row][0][1] == pytest.approx(top_prob, abs=1e-5)
        assert last["target_rank"][row] == int((probs[row] > probs[row, t]).sum())
