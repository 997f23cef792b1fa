"""Cost of SLAM's FFN-only fine-tune against a full fine-tune of the same model, in the same process (issue 10).

A Llama-architecture model (8 layers, d_model 512, d_ff 1376, vocab 8192; --device cuda for a GPU), batches of
8 x 256 tokens. One optimizer step = forward, loss, backward, AdamW step, as the Trainer runs it. SLAM trains the up
and down projections of k = 2 of the 8 layers (the paper: 6 of 32); the full fine-tune trains every parameter.
Memory: on CUDA the peak allocated during a step; on the CPU the bytes of what training adds to the weights
(gradients and AdamW's two moments, counted from the tensors after a step). Prints the step-time ratio
(full / SLAM) and the memory ratio (full / SLAM) on the last line.
"""

from __future__ import annotations

import argparse
import time

import torch

import neuronlab as nl


def make_model(device: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=512,
        intermediate_size=1376,
        num_hidden_layers=8,
        num_attention_heads=8,
        vocab_size=8192,
        max_position_embeddings=512,
    )
    return LlamaForCausalLM(config).to(device)


def measure(modules: str, layers: list[int], device: str, steps: int = 4) -> tuple[float, int, int]:
    """(best step seconds, memory bytes, trainable values)."""
    model = make_model(device)
    trainable = nl.freeze_except_ffn(model, layers, modules)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-5)
    ids = torch.randint(3, 8192, (8, 256), generator=torch.Generator().manual_seed(0)).to(device)
    best = float("inf")
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    for step in range(steps + 1):  # the first step allocates the optimizer state: not timed
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=False)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if step:
            best = min(best, time.perf_counter() - start)
    if device.startswith("cuda"):
        memory = torch.cuda.max_memory_allocated()
    else:
        state = [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t)]
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        memory = sum(t.numel() * t.element_size() for t in state + grads)
    return best, memory, trainable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(2)
    slam_t, slam_m, slam_n = measure("up,down", [0, 1], args.device)
    full_t, full_m, full_n = measure("all", [], args.device)
    print(
        f"SLAM (2 of 8 layers, up+down): {slam_n:,} trainable values, step {slam_t * 1e3:.0f} ms, "
        f"memory {slam_m / 2**20:.1f} MiB"
    )
    print(
        f"full fine-tune:                {full_n:,} trainable values, step {full_t * 1e3:.0f} ms, "
        f"memory {full_m / 2**20:.1f} MiB"
    )
    print(f"full / SLAM step time: {full_t / slam_t:.2f}   full / SLAM memory: {full_m / slam_m:.2f}")


if __name__ == "__main__":
    main()
