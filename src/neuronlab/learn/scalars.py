"""Learned interventions (Stoehr et al. 2024): activation scalars, steering vectors and dynamic scalars.

    items = pronoun_task(swap=True)                   # {prompt, target, foil}: make target beat foil
    train_items, held_out = split(items, holdout=0.25)
    learned = train_scaling(model, tok, train_items, ScalingConfig(method="activscalar"))
    evaluate_scaling(model, tok, learned, held_out)   # flip rate, logit-difference change, KL, minimality
    with nl.apply(model, learned.to_plan()):          # the same entries training ran through
        model(**batch)
    learned.save("pronoun.safetensors"); learned = LearnedIntervention.load("pronoun.safetensors")

Sites are (component, layer) with component in attn_out, ffn_out, resid; positions count from the end of the
prompt (0 = the last token), so prompts of different lengths line up at the answer. The methods (learn/methods.py):
- activscalar: h <- alpha * h, one scalar per (component, layer, position) for the last `positions` tokens,
  initialised at 1;
- steervec: h <- h + v, one vector per (component, layer, position), initialised at 0;
- dynscalar: h <- alpha(h) * h with alpha(h) = b + w . h / |h|, one (w, b) per (component, layer) shared over
  every position, initialised at w = 0, b = 1, so it applies to prompts of any length.

Objective, per item, at the prompt's last position (logits z with the intervention, z0 without):
    effectiveness  softplus(-(z[target] - z[foil]))       (first token of each answer, tokenized in context)
    faithfulness   KL(p0 || p) over the vocabulary without target and foil, both renormalised
    minimality     L1 of (alpha - 1), of v, or of (w, b - 1), summed over the parameters
weighted by `effectiveness`, `faithfulness` and `minimality`. A seeded share of the training groups is kept for
validation: training stops when the validation loss has not improved for `patience` epochs and returns the
best parameters.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from neuronlab.config import Config, configured, option
from neuronlab.data.contrast import check_items, split
from neuronlab.errors import NeuronlabError
from neuronlab.intervene.apply import apply
from neuronlab.learn.contrast_items import Encoded, base_logits, encode, last_logits, same_length_batches
from neuronlab.learn.methods import COMPONENTS, LearnedIntervention, method
from neuronlab.models.load import model_info
from neuronlab.models.sites import Site, check_layers, decoder_layers, module_device, site_width


@dataclass(frozen=True)
class ScalingConfig(Config):
    """What to learn and how. The loss weights are the ones that flip stories260K's pronouns on held-out names
    (effectiveness 1 leaves the flip short of a margin there; see tests/learn)."""

    method: str = option("activscalar", "activscalar, steervec or dynscalar")
    components: tuple[str, ...] = option(COMPONENTS, "sites to intervene on: attn_out, ffn_out, resid")
    layers: tuple[int, ...] | None = option(None, "layers to intervene on (default: all)")
    positions: int | None = option(
        None, "last N prompt positions (activscalar, steervec; default: the longest training prompt)"
    )
    effectiveness: float = option(5.0, "weight of softplus(-(logit target - logit foil))")
    faithfulness: float = option(1.0, "weight of the KL on the other tokens")
    minimality: float = option(0.03, "weight of the L1 on alpha - 1 (or v, or w and b - 1)")
    lr: float = option(0.05, "Adam learning rate")
    epochs: int = option(200, "at most this many passes over the training items")
    batch_size: int = option(32, "items per optimisation step")
    patience: int = option(20, "stop after this many epochs without a better validation loss")
    val_fraction: float = option(0.2, "share of training groups used for early stopping (0: none)")
    seed: int = option(0, "seed of the validation split, the batch order and the initialisation")

    def check(self) -> None:
        method(self.method)
        bad = [c for c in self.components if c not in COMPONENTS]
        if bad or not self.components:
            raise NeuronlabError(f"components must be among {', '.join(COMPONENTS)}, not {list(self.components)}")
        if self.positions is not None and self.positions < 1:
            raise NeuronlabError("positions must be at least 1")
        if min(self.effectiveness, self.faithfulness, self.minimality) < 0 or self.lr <= 0:
            raise NeuronlabError("loss weights must be >= 0 and lr > 0")
        if self.batch_size < 1 or not 0 <= self.val_fraction < 1:
            raise NeuronlabError("batch_size must be at least 1 and val_fraction in [0, 1)")


# ---------------------------------------------------------------- objective


def logit_diff(z: Tensor, target: Tensor, foil: Tensor) -> Tensor:
    """z[target] - z[foil] per row: [batch]."""
    rows = torch.arange(z.shape[0], device=z.device)
    return z[rows, target.to(z.device)] - z[rows, foil.to(z.device)]


def rest_kl(z0: Tensor, z: Tensor, target: Tensor, foil: Tensor) -> Tensor:
    """KL(p0 || p) on the vocabulary without target and foil, each distribution renormalised: [batch]."""
    keep = torch.ones_like(z, dtype=torch.bool)
    rows = torch.arange(z.shape[0], device=z.device)
    keep[rows, target.to(z.device)] = False
    keep[rows, foil.to(z.device)] = False
    lp0 = torch.log_softmax(z0.masked_fill(~keep, float("-inf")), -1)
    lp = torch.log_softmax(z.masked_fill(~keep, float("-inf")), -1)
    terms = lp0.exp() * (lp0 - lp)
    return terms.masked_fill(~keep, 0.0).sum(-1)


@contextmanager
def _frozen(model):
    """Model weights without gradients for the duration (restored after), model in eval mode."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def objective(
    model,
    learned: LearnedIntervention,
    enc: Encoded,
    z0: Tensor,
    idx: list[int],
    cfg: ScalingConfig,
) -> dict[str, Tensor]:
    """Loss terms for one batch (see module doc); "loss" is their weighted sum. The intervention runs through
    `nl.apply` on its Plan entries (undetached), the same path that applies it after training."""
    with apply(model, learned.to_plan(detach=False)):
        z = last_logits(model, enc, idx)
    base = z0[idx].to(z.device)
    eff = F.softplus(-logit_diff(z, enc.target[idx], enc.foil[idx])).mean()
    kl = rest_kl(base, z, enc.target[idx], enc.foil[idx]).mean()
    l1 = torch.stack([d.abs().sum() for d in learned.deviation().values()]).sum()
    loss = cfg.effectiveness * eff + cfg.faithfulness * kl + cfg.minimality * l1
    return {"loss": loss, "effectiveness": eff, "faithfulness": kl, "minimality": l1}


# ---------------------------------------------------------------- training and evaluation


def init_scaling(model, cfg: ScalingConfig, positions: int) -> LearnedIntervention:
    """Identity parameters (alpha = 1, v = 0, w = 0 and b = 1) on every chosen site, float32, requiring grad."""
    layers_of = decoder_layers(model)
    n_layers = len(layers_of)
    impl = method(cfg.method)
    layers = range(n_layers) if cfg.layers is None else cfg.layers
    check_layers(layers, n_layers)
    params = {}
    for layer in layers:
        device = module_device(layers_of[layer])
        for kind in cfg.components:
            p = impl.identity(site_width(model, kind), positions)
            params[str(Site(layer, kind))] = p.to(device).requires_grad_(True)
    meta = {"model": model_info(model), "config": cfg.to_dict(), "positions": positions}
    return LearnedIntervention(cfg.method, params, meta)


def _mean_loss(model, learned, enc, z0, cfg) -> float:
    total, n = 0.0, 0
    with torch.no_grad():
        for idx in same_length_batches(enc, cfg.batch_size):
            total += float(objective(model, learned, enc, z0, idx, cfg)["loss"]) * len(idx)
            n += len(idx)
    return total / n


def train_scaling(
    model,
    tokenizer,
    items: Sequence[dict],
    config: ScalingConfig | None = None,
    progress: bool = True,
    **settings: Any,
) -> LearnedIntervention:
    """Learn the config's method on `items` by Adam on the three-part objective (module doc), with a
    ScalingConfig or its fields as keywords (`method="dynscalar", epochs=20`); early stopping on a validation share
    of the groups. Returns the best parameters, detached, with a training history in meta."""
    from tqdm.auto import tqdm

    cfg = configured(ScalingConfig, config, settings, "train_scaling")

    items = check_items(items, "the training items")
    if cfg.val_fraction > 0 and len({i["group"] for i in items}) >= 2:
        fit, val = split(items, cfg.val_fraction, cfg.seed)
    else:
        fit, val = list(items), []
    enc, venc = encode(tokenizer, fit), encode(tokenizer, val) if val else None
    positions = cfg.positions or max(len(r) for r in enc.ids)
    torch.manual_seed(cfg.seed)
    scaling = init_scaling(model, cfg, positions)
    opt = torch.optim.Adam(list(scaling.params.values()), lr=cfg.lr)
    rng = random.Random(cfg.seed)
    history: list[dict] = []
    with _frozen(model):
        z0 = base_logits(model, enc, cfg.batch_size)
        vz0 = base_logits(model, venc, cfg.batch_size) if venc else None
        best, best_loss, since = None, float("inf"), 0
        bar = tqdm(range(cfg.epochs), desc=f"train {cfg.method}", disable=not progress, dynamic_ncols=True)
        for epoch in bar:
            terms = {"loss": 0.0, "effectiveness": 0.0, "faithfulness": 0.0, "minimality": 0.0}
            for idx in same_length_batches(enc, cfg.batch_size, rng):
                out = objective(model, scaling, enc, z0, idx, cfg)
                opt.zero_grad()
                out["loss"].backward()
                opt.step()
                for k in terms:
                    terms[k] += float(out[k].detach()) * len(idx) / len(fit)
            val_loss = _mean_loss(model, scaling, venc, vz0, cfg) if venc else terms["loss"]
            history.append(
                {"epoch": epoch + 1, **{k: round(v, 6) for k, v in terms.items()}, "val_loss": round(val_loss, 6)}
            )
            bar.set_postfix(loss=f"{terms['loss']:.3f}", val=f"{val_loss:.3f}")
            if val_loss < best_loss - 1e-6:
                best_loss, since = val_loss, 0
                best = {k: p.detach().clone() for k, p in scaling.params.items()}
            else:
                since += 1
                if since >= cfg.patience:
                    break
    if best is None:  # no epoch improved on the start (e.g. epochs=0): keep the identity
        best = {k: p.detach().clone() for k, p in scaling.params.items()}
    meta = {
        **scaling.meta,
        "history": history,
        "best_val_loss": best_loss,
        "train_groups": sorted({i["group"] for i in fit}),
        "val_groups": sorted({i["group"] for i in val}),
    }
    return LearnedIntervention(cfg.method, best, meta)


def evaluate_scaling(
    model,
    tokenizer,
    scaling: LearnedIntervention,
    items: Sequence[dict],
    batch_size: int = 32,
    eps: float = 0.1,
) -> dict:
    """Effectiveness, faithfulness and minimality on `items`, the intervention applied through `nl.apply`:
    accuracy_before / success (share with target above foil, without / with), flip_rate (success among the
    items the model got "wrong" before: None if there are none), mean logit difference before, after and its
    change, mean KL on the other tokens, and parameters, L1 and scalars moved more than eps."""
    scaling.check_model(model)
    enc = encode(tokenizer, check_items(items, "the evaluation items"))
    with torch.no_grad():
        z0 = base_logits(model, enc, batch_size)
        with apply(model, scaling.to_plan()):
            z = base_logits(model, enc, batch_size)
    before, after = logit_diff(z0, enc.target, enc.foil), logit_diff(z, enc.target, enc.foil)
    wrong = before <= 0
    return {
        "items": len(enc.ids),
        "accuracy_before": float((before > 0).double().mean()),
        "success": float((after > 0).double().mean()),
        "flip_rate": float((after[wrong] > 0).double().mean()) if wrong.any() else None,
        "logit_diff_before": float(before.mean()),
        "logit_diff_after": float(after.mean()),
        "logit_diff_change": float((after - before).mean()),
        "kl": float(rest_kl(z0, z, enc.target, enc.foil).mean()),
        "parameters": scaling.n_parameters(),
        "l1": round(scaling.l1(), 6),
        "moved": scaling.moved(eps),
        "epsilon": eps,
    }
