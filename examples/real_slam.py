"""SLAM on a real pretrained model (Fan et al. 2025): which layers handle languages, what an FFN-only
fine-tune costs against a full one, and a short FFN-only fine-tune.

1. Layer selection: `record` the FFN activations of --lines FLORES-200 lines in each of 14 languages, then
   `select_layers` with MSD (and the overlap variant) picks k = 6 layers; the paper picks the lowest six of
   LLaMA-2-7B's 32.
2. Cost on this model (float32, one process): an optimizer step (forward, loss, backward, AdamW) on 4 x 128
   tokens training the up and down projections of the chosen layers, against every parameter; memory is what
   training adds to the weights (gradients and AdamW's two moments, counted from the tensors after a step).
3. A short fine-tune (the Trainer, SLAM's lr 2e-5, --steps steps of 4 lines) of the chosen FFNs on French
   FLORES lines 0-399; perplexity of English and French held-out lines (900 on) before and after.
Writes results.json and layers.png into --out.

    python examples/real_slam.py --model gemma-3-270m --out runs/slam-gemma
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from _study import load, parser  # examples/_study.py, beside this script

import neuronlab as nl
from neuronlab.data.corpora import read_lines
from neuronlab.learn.finetune import FinetuneConfig, finetune, freeze_except_ffn
from neuronlab.report.plots import layer_scores

FLORES = Path(__file__).resolve().parents[2] / "shared" / "data" / "flores200_devtest"


def step_cost(model, layers: list[int], modules: str, steps: int = 3) -> dict:
    """Best seconds of an optimizer step after the first, the bytes training adds, and the trainable values."""
    trainable = freeze_except_ffn(model, layers, modules)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-5)
    ids = torch.randint(3, 30_000, (4, 128), generator=torch.Generator().manual_seed(0))
    best = float("inf")
    model.train()
    for step in range(steps + 1):  # the first step allocates the optimizer state: not timed
        start = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=False)
        if step:
            best = min(best, time.perf_counter() - start)
    model.eval()
    state = [t for s in opt.state.values() for t in s.values() if torch.is_tensor(t)]
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    memory = sum(t.numel() * t.element_size() for t in state + grads)
    for p in model.parameters():
        p.grad = None
    return {"step_seconds": best, "memory_bytes": memory, "trainable": trainable}


def main() -> None:
    ap = parser(__doc__, dtype=False)
    ap.add_argument("--lines", type=int, default=50, help="FLORES lines per language to record")
    ap.add_argument("--steps", type=int, default=100, help="fine-tuning steps")
    args = ap.parse_args()
    start = time.monotonic()
    model, tok = load(args)
    args.out.mkdir(parents=True, exist_ok=True)
    flores = {f.name.split("_")[0]: read_lines(f) for f in sorted(FLORES.glob("*.devtest"))}
    results = {"model": args.model, "languages": list(flores), "lines": args.lines}

    t = time.monotonic()
    stats = nl.record(model, tok, {lang: lines[: args.lines] for lang, lines in flores.items()}, site="act")
    sel = nl.select_layers(stats, k=6, method="msd", reference="eng")
    overlap = nl.select_layers(stats, k=6, method="overlap", reference="eng")
    results["selection"] = {
        "msd": sel.layers,
        "overlap": overlap.layers,
        "msd_scores": sel.scores,
        "overlap_scores": overlap.scores,
        "layers": stats.n_layers,
        "seconds": time.monotonic() - t,
    }
    sel.save(args.out / "layers.json")
    (args.out / "layers.png").write_bytes(layer_scores(sel))
    print(f"MSD picks layers {sel.layers}, overlap {overlap.layers} of {stats.n_layers} (paper: the lowest six)")

    slam, full = step_cost(model, sel.layers, "up,down"), step_cost(model, [], "all")
    results["cost"] = {
        "slam": slam,
        "full": full,
        "step_ratio": full["step_seconds"] / slam["step_seconds"],
        "memory_ratio": full["memory_bytes"] / slam["memory_bytes"],
    }
    print(
        f"step {slam['step_seconds']:.2f} s (SLAM) vs {full['step_seconds']:.2f} s (full): "
        f"x{results['cost']['step_ratio']:.2f}; "
        f"memory {slam['memory_bytes'] / 2**20:.0f} vs {full['memory_bytes'] / 2**20:.0f} MiB: "
        f"x{results['cost']['memory_ratio']:.1f}; {slam['trainable']:,} vs {full['trainable']:,} values"
    )

    held = {lang: flores[lang][900:960] for lang in ("eng", "fra")}
    before = {lang: nl.perplexity(model, tok, lines) for lang, lines in held.items()}
    items = [{"prompt": "", "response": line} for line in flores["fra"][:400]]
    cfg = FinetuneConfig(template="plain", max_steps=args.steps, batch_size=4, save_steps=10_000)
    t = time.monotonic()
    delta = finetune(model, tok, items, sel.layers, cfg, out=args.out / "finetune", resume=False, progress=False)
    tuned_seconds = time.monotonic() - t
    after = {lang: nl.perplexity(model, tok, lines) for lang, lines in held.items()}
    results["finetune"] = {
        "layers": sel.layers,
        "steps": delta.meta["steps"],
        "train_loss": delta.meta["train_loss"],
        "trainable": delta.meta["trainable"],
        "share": delta.meta["share"],
        "lr": cfg.lr,
        "seconds": tuned_seconds,
        "perplexity_before": before,
        "perplexity_after": after,
    }
    print("perplexity before -> after: " + ", ".join(f"{k} {before[k]:.2f} -> {after[k]:.2f}" for k in before))
    results["seconds"] = time.monotonic() - start
    nl.io.write_json(args.out / "results.json", results)
    print(json.dumps({"seconds": results["seconds"]}))


if __name__ == "__main__":
    main()
