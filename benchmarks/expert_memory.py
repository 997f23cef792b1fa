"""Memory of expert-neuron responses: proportional to sentences x neurons, never to tokens (issue 11).

GPT-2 architecture (6 layers x 2048 FFN neurons), sentences of 128 tokens. `responses` keeps one pooled value per
sentence and neuron (float16: 2 bytes); keeping every token's activation would take 128 x 4 bytes. Records 64 and
then 512 sentences and prints, on the last line, the peak-memory growth per added sentence per neuron in bytes
(resource.getrusage; what the process actually allocated) next to what a per-token store would need.
"""

from __future__ import annotations

import resource

import torch
from _common import char_tokenizer, gpt2_model, texts

from neuronlab.select.experts import responses


def peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def main() -> None:
    torch.set_num_threads(2)
    model, tok = gpt2_model(), char_tokenizer()
    neurons = 6 * 2048
    small = responses(model, tok, texts(64, 127), batch_size=16, progress=False)
    before = peak_bytes()
    big = responses(model, tok, texts(512, 127), batch_size=16, progress=False)
    grown = peak_bytes() - before
    added = big.shape[0] - small.shape[0]
    print(f"responses: {big.element_size()} bytes per sentence per neuron in the result ({big.dtype})")
    print(
        f"peak memory growth per added sentence per neuron: {grown / (added * neurons):.2f} bytes; "
        f"a per-token float32 store would need {128 * 4} bytes"
    )


if __name__ == "__main__":
    main()
