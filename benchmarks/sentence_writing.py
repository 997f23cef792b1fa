"""Writing concept sentences (issue 30): one word's 40 samples of 32 new tokens through the chat prompt, as
`generate_concepts` writes them, with the prompt computed once for all rows (`sample_rows`, now) and once per
row (plain `generate`, before), against the work the sentences need: one prefill of the prompt and 32 decode steps
of the 40-row batch (a hand-written greedy loop over the model's own cache). Prints seconds per word, new tokens/s
and each path's ratio to that floor, all measured in this process (interleaved, best of --rounds).

    python benchmarks/sentence_writing.py                          # SmolLM2-135M-Instruct where installed
    python benchmarks/sentence_writing.py --model gemma-3-270m --dtype bfloat16 --device cuda
"""

from __future__ import annotations

import argparse

import torch
from _common import bench_device, interleaved

import neuronlab as nl
from neuronlab.data.batching import model_inputs, pad_id
from neuronlab.data.concepts import CHAT_PROMPT
from neuronlab.data.sampling import CACHE, sample_rows

ROWS, NEW = 40, 32


def floor(model, prompt: list[int]) -> None:
    """One prefill of the prompt, its cache copied to the rows, 32 greedy decode steps of the batch."""
    with torch.no_grad():
        out = model(**model_inputs(model, torch.tensor([prompt])), use_cache=True)
        cache = out[CACHE]
        cache.batch_repeat_interleave(ROWS)
        token = out.logits[:, -1].argmax(-1).repeat(ROWS)[:, None]
        for _ in range(NEW - 1):
            out = model(input_ids=token, **{CACHE: cache}, use_cache=True)
            cache, token = out[CACHE], out.logits[:, -1].argmax(-1, keepdim=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct", help="packaged name, folder, .gguf or hub id")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds of each path, after one warm-up")
    args, _ = parser.parse_known_args()
    device = bench_device()
    model, tok = nl.load_model(args.model, dtype=args.dtype, device=None if device == "cpu" else device)
    text = tok.apply_chat_template(
        [{"role": "user", "content": CHAT_PROMPT.format(word="river")}], add_generation_prompt=True, tokenize=False
    )
    prompt = tok(text, add_special_tokens=False)["input_ids"]
    rows, pad = [prompt] * ROWS, pad_id(tok, model)
    never = [len(tok)]  # no stop token: every row writes all 32 tokens, as the floor does
    best = interleaved(
        {
            "shared prefill (now)": lambda: sample_rows(model, rows, NEW, pad, never, seed=0),
            "prefill per row (before)": lambda: sample_rows(model, rows, NEW, pad, never, seed=0, shared=False),
            "floor": lambda: floor(model, prompt),
        },
        rounds=args.rounds,
    )
    print(f"{args.model} ({args.dtype}, {device}): {ROWS} rows of a {len(prompt)}-token prompt, {NEW} new tokens each")
    for name, seconds in best.items():
        print(
            f"  {name:26s} {seconds:6.2f} s a word  {ROWS * NEW / seconds:7.1f} new tokens/s  "
            f"x{seconds / best['floor']:.2f} the floor"
        )


if __name__ == "__main__":
    main()
