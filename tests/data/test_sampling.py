"""Sampling many rows of a few prompts with each prompt computed once gives the tokens plain `generate` gives on
every row (the same seed, padding, stop tokens): only the repeated prefill is gone."""

import pytest

from neuronlab.data.sampling import sample_rows
from neuronlab.testing import tiny_causal_lm


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma3_text", "opt", "phi3"])
def test_a_shared_prefill_samples_what_generate_samples_on_every_row(arch):
    model = tiny_causal_lm(arch, 0, layers=2, spread=0.3).eval()
    rows = [[1, 5, 9, 14]] * 5 + [[1, 7, 8]] * 4 + [[1, 5, 9, 14]] * 2 + [[1, 30]]  # left padding differs by prompt
    shared = sample_rows(model, rows, 10, pad=0, stop=[2], seed=3)
    plain = sample_rows(model, rows, 10, pad=0, stop=[2], seed=3, shared=False)
    assert shared == plain and len(shared) == len(rows)
    assert sample_rows(model, rows, 10, pad=0, stop=[2], seed=4) != shared  # the seed matters
