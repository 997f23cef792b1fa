"""Fine-tune only the FFNs of chosen layers (SLAM, Fan et al. 2025) with the Hugging Face Trainer, and keep only
what changed.

    nl.freeze_except_ffn(model, [0, 1, 2, 3, 4, 5], modules="up,down")   # trainable parameters; gate frozen
    delta = finetune(model, tok, read_sft("train.jsonl"), [0, 1, 2], FinetuneConfig(), out="run/")
    delta = Delta.load("run/"); delta.apply(base)                     # refuses another base model
    merge(base, delta).save_pretrained("merged/")                     # a plain Hugging Face checkpoint

`modules` names FFN projections through the ArchSpec: "up" (a gated FFN's up projection, or the single first
projection of GPT-2, GPT-NeoX, OPT, BLOOM and Phi), "gate", "down", or "all" (every parameter: the full
fine-tune baseline). Phi-3 stores gate and up in one fused matrix: training "up" without "gate" trains only its up
half, through a gradient mask on the other half. Training is the Trainer's (so `accelerate launch`, `torchrun`,
DeepSpeed and FSDP configs work unchanged): loss on the response tokens only, AdamW, cosine schedule, lr 2e-5 (the
paper's), bf16 where the hardware has it, checkpoints and resume in `out/trainer`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from neuronlab.artifacts import register_artifact
from neuronlab.config import Config, configured, option
from neuronlab.data.batching import pad_id, pad_right
from neuronlab.data.scoring import continuation_ids
from neuronlab.data.templates import prompt_format
from neuronlab.errors import NeuronlabError
from neuronlab.io import atomic_writes, json_writer, read_safetensors, safetensors_writer
from neuronlab.models.load import model_info, require_same_model
from neuronlab.models.resolve import arch_spec
from neuronlab.models.sites import check_layers, decoder_layers, get_module

MODULES = ("up", "gate", "down")
DELTA_FORMAT = "neuronlab.delta/1"
DELTA_FILE = "delta.safetensors"
M = TypeVar("M", bound=nn.Module)  # merge and apply hand back the model they were given


def _modules(modules: str) -> tuple[str, ...]:
    if modules.strip() == "all":
        return ("all",)
    chosen = tuple(m.strip() for m in modules.split(",") if m.strip())
    bad = [m for m in chosen if m not in MODULES]
    if bad or not chosen:
        raise NeuronlabError(
            f"modules must be 'all' or a comma-separated choice of {', '.join(MODULES)}, not {modules!r}"
        )
    return chosen


def ffn_parameters(
    model: nn.Module, layers: Sequence[int], modules: str = "up,down"
) -> dict[str, tuple[nn.Parameter, slice | None]]:
    """{parameter name: (parameter, rows to train or None for all)} of the chosen FFN projections ("all": every
    parameter of the model, whatever `layers`). A family without a separate gate module (plain FFNs) has nothing for
    "gate"; Phi-3's fused gate_up gives row slices."""
    chosen = _modules(modules)
    if chosen == ("all",):
        return {n: (p, None) for n, p in model.named_parameters()}
    spec = arch_spec(model)
    blocks = decoder_layers(model)
    if not layers:
        raise NeuronlabError("no layers chosen: give the layers whose FFN to train, or modules='all'")
    check_layers(layers, len(blocks))
    names = {id(p): n for n, p in model.named_parameters()}
    out: dict[str, tuple[nn.Parameter, slice | None]] = {}
    for layer in layers:
        for part in chosen:
            fused = spec.fused_gate_up and part in ("up", "gate")
            path = spec.up if fused else {"up": spec.up, "gate": spec.gate, "down": spec.down}[part]
            if path is None:
                continue
            for p in get_module(blocks[layer], path).parameters():
                rows = None
                if fused:  # [gate; up] stacked on the output rows (weight [2 d_ff, d_model])
                    half = p.shape[0] // 2
                    rows = slice(half, None) if part == "up" else slice(0, half)
                    if names[id(p)] in out:  # both halves asked for: the whole matrix
                        rows = None
                out[names[id(p)]] = (p, rows)
    return out


def freeze_except_ffn(model: nn.Module, layers: Sequence[int], modules: str = "up,down") -> int:
    """Freeze every parameter except the chosen FFN projections of `layers` (in place; works on the meta device)
    and return the number of trainable values. `modules="all"` unfreezes everything (the full fine-tune)."""
    for handle in getattr(model, "_neuronlab_grad_masks", []):
        handle.remove()
    masks: list = []
    setattr(model, "_neuronlab_grad_masks", masks)  # noqa: B010  (an attribute of ours; torch types module attributes)
    model.requires_grad_(False)
    total = 0
    for p, rows in ffn_parameters(model, layers, modules).values():
        p.requires_grad_(True)
        if rows is None:
            total += p.numel()
            continue
        keep = torch.zeros(p.shape[0], *([1] * (p.dim() - 1)), dtype=torch.bool, device=p.device)
        keep[rows] = True
        total += int(keep.sum()) * (p.numel() // p.shape[0])
        masks.append(p.register_hook(lambda g, keep=keep: g * keep.to(g.dtype)))
    return total


def trainable_share(model: nn.Module, trainable: int) -> float:
    return trainable / sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- data


def read_sft(path: str | Path) -> list[dict]:
    """Items {prompt, response} (or {instruction, output}) from a JSONL file; clear errors for missing keys."""
    from neuronlab.data.corpora import read_jsonl

    items = []
    for n, row in read_jsonl(path, "training data"):
        if not isinstance(row, dict):
            raise NeuronlabError(f"{path}:{n} is not a JSON object")
        prompt = row.get("prompt", row.get("instruction"))
        response = row.get("response", row.get("output"))
        if not isinstance(prompt, str) or not isinstance(response, str) or not response:
            raise NeuronlabError(f"{path}:{n} needs {{prompt, response}} (or {{instruction, output}}) as strings")
        items.append({"prompt": prompt, "response": response})
    return items


def encode_sft(tokenizer, items: Sequence[dict], template: str = "qalign", cutoff: int = 512) -> list[dict]:
    """input_ids and labels per item: the templated prompt (with the tokenizer's BOS) then the response and EOS;
    labels are -100 on the prompt, so the loss covers the response only. Cut at `cutoff` tokens; an item whose
    prompt fills the cut-off is refused (it would train on nothing)."""
    fmt = prompt_format(template)
    rows = []
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for i, item in enumerate(items):
        p, r = continuation_ids(tokenizer, fmt.format(query=item["prompt"]), " " + item["response"].strip())
        r = r + eos
        ids, labels = (p + r)[:cutoff], ([-100] * len(p) + r)[:cutoff]
        if all(x == -100 for x in labels):
            raise NeuronlabError(f"item {i + 1}: the prompt alone is {len(p)} tokens, at or over the cut-off {cutoff}")
        rows.append({"input_ids": ids, "labels": labels})
    return rows


class _Collate:
    def __init__(self, pad: int):
        self.pad = pad

    def __call__(self, rows: list[dict]) -> dict:
        ids, mask = pad_right([r["input_ids"] for r in rows], self.pad)
        labels, _ = pad_right([r["labels"] for r in rows], -100)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


# ---------------------------------------------------------------- training


@dataclass(frozen=True)
class FinetuneConfig(Config):
    """What `finetune` trains and how (paper defaults where the paper gives them)."""

    modules: str = option(
        "up,down",
        "FFN projections to train: up,down (SLAM: gate frozen), gate,up,down, or all "
        "(every parameter: the full fine-tune baseline)",
    )
    lr: float = option(2e-5, "learning rate (SLAM: 2e-5)")
    epochs: float = option(3.0, "passes over the data")
    max_steps: int = option(-1, "stop after this many optimizer steps (-1: run the epochs)")
    batch_size: int = option(4, "items per device and step")
    grad_accum: int = option(1, "gradient accumulation steps")
    cutoff: int = option(512, "tokens per item (prompt and response), cut beyond")
    template: str = option("qalign", "prompt template: qalign (Alpaca-style), plain, or a text with {query}")
    warmup_steps: int = option(0, "linear warm-up steps before the cosine schedule")
    weight_decay: float = option(0.0, "AdamW weight decay")
    bf16: bool | None = option(None, "train in bf16 (default: where the hardware has it)")
    save_steps: int = option(500, "Trainer checkpoint every N steps (resume picks up the last)")
    seed: int = option(0, "seed of the data order and the Trainer")


def finetune(
    model,
    tokenizer,
    items: Sequence[dict],
    layers: Sequence[int],
    config: FinetuneConfig | None = None,
    out: str | Path = "finetune-out",
    resume: bool = True,
    progress: bool = True,
    **settings: Any,
) -> Delta:
    """Train the chosen FFNs of `layers` on `items` with the Trainer (module doc), with a FinetuneConfig or its
    fields as keywords (`lr=1e-4, max_steps=200`); save the Delta in `out` and return it. With `resume`, a run
    continues from the last Trainer checkpoint in `out/trainer`."""
    cfg = configured(FinetuneConfig, config, settings, "finetune")
    from transformers import Trainer, TrainingArguments

    from neuronlab.dist import launched

    out = Path(out)
    base = model_info(model)
    trainable = freeze_except_ffn(model, layers, cfg.modules)
    rows = encode_sft(tokenizer, items, cfg.template, cfg.cutoff)
    bf16 = cfg.bf16 if cfg.bf16 is not None else bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    args = TrainingArguments(
        output_dir=str(out / "trainer"),
        learning_rate=cfg.lr,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        bf16=bf16,
        logging_steps=10,
        save_steps=cfg.save_steps,
        save_total_limit=1,
        save_only_model=False,
        seed=cfg.seed,
        report_to=[],
        remove_unused_columns=False,
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        # under torchrun with the model on CPUs the Trainer runs DDP over gloo only when told the run is on CPUs
        use_cpu=launched() and next(model.parameters()).device.type == "cpu",
    )
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=_Collate(pad_id(tokenizer, model)))
    if not progress:
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # without a progress bar the Trainer prints every log line
    last = resume and any((out / "trainer").glob("checkpoint-*"))
    model.train()
    result = trainer.train(resume_from_checkpoint=True if last else None)
    model.eval()
    tuned = {n: p for n, (p, _) in ffn_parameters(model, layers, cfg.modules).items()}
    meta = {
        "base": base,
        "layers": sorted(layers),
        "modules": cfg.modules,
        "config": cfg.to_dict(),
        "trainable": trainable,
        "share": trainable_share(model, trainable),
        "items": len(rows),
        "train_loss": float(result.training_loss),
        "steps": int(result.global_step),
    }
    delta = Delta({n: p.detach().cpu().clone() for n, p in tuned.items()}, meta)
    delta.save(out)
    return delta


# ---------------------------------------------------------------- the tuned tensors


@dataclass
class Delta:
    """The tuned tensors of an FFN-only fine-tune (by parameter name) and the identity of the base model."""

    tensors: dict[str, torch.Tensor]
    meta: dict

    def save(self, folder: str | Path) -> None:
        """folder/delta.safetensors (tensors, with the JSON meta inside) and folder/delta.json (the same meta, to
        read)."""
        folder = Path(folder)
        tensors = safetensors_writer(self.tensors, DELTA_FORMAT, meta=json.dumps(self.meta))
        meta = json_writer({"format": DELTA_FORMAT, **self.meta})
        atomic_writes({folder / DELTA_FILE: tensors, folder / "delta.json": meta})  # both files, or neither

    @classmethod
    def load(cls, path: str | Path) -> Delta:
        path = Path(path)
        file = path / DELTA_FILE if path.is_dir() else path
        tensors, header = read_safetensors(file, DELTA_FORMAT, "delta")
        return cls(tensors, json.loads(header["meta"]))

    def apply(self, model: M) -> M:
        """Write the tuned tensors into `model` (in place; it must be the base they were tuned from)."""
        require_same_model(self.meta.get("base"), model, "this delta")
        params = dict(model.named_parameters())
        missing = [n for n in self.tensors if n not in params]
        if missing:
            raise NeuronlabError(
                f"the model has no parameter {missing[0]!r}: this delta belongs to another architecture"
            )
        with torch.no_grad():
            for name, t in self.tensors.items():
                if params[name].shape != t.shape:
                    raise NeuronlabError(f"{name}: delta shape {tuple(t.shape)} != model {tuple(params[name].shape)}")
                params[name].copy_(t.to(params[name].dtype))
        return model

    def summary(self) -> str:
        m = self.meta
        return (
            f"delta of {m.get('base', {}).get('name_or_path') or '?'}: layers {m.get('layers')}, modules "
            f"{m.get('modules')}, {m.get('trainable', 0):,} trained values ({m.get('share', 0):.2%} of the model), "
            f"{len(self.tensors)} tensors, {m.get('steps', '?')} steps, "
            f"train loss {m.get('train_loss', float('nan')):.4f}"
        )


def merge(model: M, delta: Delta) -> M:
    """`model` with the delta written in: save it with `save_pretrained` for a plain checkpoint."""
    return delta.apply(model)


register_artifact("fine-tuning delta", [DELTA_FORMAT], Delta.load)
