"""Learned interventions (Stoehr et al. 2024): activation scalars, steering vectors and dynamic scalars.

    >>> items = pronoun_task(swap=True)                   # {prompt, target, foil}: make target beat foil
    >>> train_items, held_out = split(items, holdout=0.25)
    >>> learned = train_scaling(model, tok, train_items, ScalingConfig(method="activscalar"))
    >>> evaluate_scaling(model, tok, learned, held_out)   # flip rate, logit-difference change, KL, minimality
    >>> with nl.apply(model, learned.to_plan()):          # the same intervention through the core's apply
    ...     model(**batch)
    >>> learned.save("pronoun.safetensors"); learned = Scaling.load("pronoun.safetensors")

Sites are (component, layer) with component in attn_out, ffn_out, resid; positions count from the end of the
prompt (0 = the last token), so prompts of different lengths line up at the answer.
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

import json
import random
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from neuronlab.data.batching import forward_takes, input_device
from neuronlab.data.contrast import check_items, split
from neuronlab.errors import NeuronlabError
from neuronlab.evaluate.perplexity import continuation_ids
from neuronlab.intervene.apply import apply
from neuronlab.intervene.plan import Add, DynScale, Plan, Scale, dyn_alpha
from neuronlab.io import read_safetensors, write_safetensors
from neuronlab.models.load import model_info, same_model
from neuronlab.models.sites import Site, decoder_layers, hooked, site_width

METHODS = ("activscalar", "steervec", "dynscalar")
COMPONENTS = ("attn_out", "ffn_out", "resid")
FORMAT = "neuronlab.scaling/1"


@dataclass(frozen=True)
class ScalingConfig:
    """What to learn and how. The loss weights are the ones that flip stories260K's pronouns on held-out names
    (effectiveness 1 leaves the flip short of a margin there; see tests/learn)."""

    method: str = "activscalar"  # activscalar | steervec | dynscalar
    components: tuple[str, ...] = COMPONENTS
    layers: tuple[int, ...] | None = None  # None: every layer
    positions: int | None = None  # last N positions (activscalar, steervec); None: the longest training prompt
    effectiveness: float = 5.0
    faithfulness: float = 1.0
    minimality: float = 0.03
    lr: float = 0.05
    epochs: int = 200
    batch_size: int = 32
    patience: int = 20
    val_fraction: float = 0.2  # share of training groups used for early stopping (0: none)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise NeuronlabError(f"unknown method {self.method!r}: use one of {', '.join(METHODS)}")
        bad = [c for c in self.components if c not in COMPONENTS]
        if bad or not self.components:
            raise NeuronlabError(f"components must be among {', '.join(COMPONENTS)}, not {list(self.components)}")
        if self.positions is not None and self.positions < 1:
            raise NeuronlabError("positions must be at least 1")
        if min(self.effectiveness, self.faithfulness, self.minimality) < 0 or self.lr <= 0:
            raise NeuronlabError("loss weights must be >= 0 and lr > 0")


@dataclass
class Scaling:
    """A learned intervention: parameters per site ("layers.3.ffn_out" -> tensor) and provenance."""

    method: str
    params: dict[str, Tensor]  # activscalar [P] (index 0 = last token), steervec [P, d], dynscalar [d + 1]
    meta: dict = field(default_factory=dict)

    def sites(self) -> list[Site]:
        return [Site.parse(name) for name in self.params]

    def deviation(self) -> dict[str, Tensor]:
        """What minimality penalises, per site: alpha - 1, v, or (w, b - 1)."""
        if self.method == "steervec":
            return dict(self.params)
        if self.method == "activscalar":
            return {k: p - 1 for k, p in self.params.items()}
        return {k: torch.cat([p[:-1], p[-1:] - 1]) for k, p in self.params.items()}

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.params.values())

    def l1(self) -> float:
        return float(sum(d.detach().abs().sum() for d in self.deviation().values()))

    def moved(self, eps: float = 0.1) -> int:
        """Scalars (activscalar), vectors (steervec: L2 norm) or sites (dynscalar: L2 norm) moved more than eps."""
        dev = {k: d.detach() for k, d in self.deviation().items()}
        if self.method == "activscalar":
            return int(sum((d.abs() > eps).sum() for d in dev.values()))
        if self.method == "steervec":
            return int(sum((d.norm(dim=-1) > eps).sum() for d in dev.values()))
        return int(sum(d.norm() > eps for d in dev.values()))

    def grids(self) -> tuple[dict[str, list[list[float]]], list[str], list[str], float | None]:
        """What to draw, per component a [layer][column] grid: alpha (activscalar) or |v| (steervec) over
        positions -P..-1; for dynscalar b and |w| per layer. Returns (grids, column labels, layer labels, centre)."""
        sites = self.sites()
        layers = sorted({s.layer for s in sites})
        kinds = [k for k in COMPONENTS if any(s.kind == k for s in sites)]
        nan = float("nan")
        if self.method == "dynscalar":
            cols = [f"{k} {part}" for k in kinds for part in ("b", "|w|")]
            grid = [[nan] * len(cols) for _ in layers]
            for site, p in zip(sites, self.params.values()):
                p, c = p.detach(), kinds.index(site.kind) * 2
                grid[layers.index(site.layer)][c : c + 2] = [float(p[-1]), float(p[:-1].norm())]
            return {"dynscalar (b, |w|)": grid}, cols, [str(layer) for layer in layers], None
        n = max(p.shape[0] for p in self.params.values())
        out = {k: [[nan] * n for _ in layers] for k in kinds}
        for site, p in zip(sites, self.params.values()):
            p = p.detach()
            values = p if self.method == "activscalar" else p.norm(dim=-1)
            out[site.kind][layers.index(site.layer)] = [float(v) for v in values.flip(0)]
        center = 1.0 if self.method == "activscalar" else None
        return out, [str(j - n) for j in range(n)], [str(layer) for layer in layers], center

    def summary(self, top: int = 10) -> str:
        """Method, model, size, L1, how many moved, and the `top` parameters that moved most."""
        value = {"activscalar": "alpha", "steervec": "|v|", "dynscalar": "b"}[self.method]
        lines = [f"{self.method} on {self.meta.get('model', {}).get('name_or_path') or '?'}: {len(self.params)} sites, "
                 f"{self.n_parameters()} parameters, L1 {self.l1():.2f}, moved >0.1: {self.moved(0.1)}"]  # fmt: skip
        lines += [f"  {name:28s} {value} = {v:+.3f}" for name, v in self.largest(top)]
        return "\n".join(lines)

    def largest(self, k: int = 10) -> list[tuple[str, float]]:
        """The k parameters (activscalar: scalars as "layers.3.ffn_out@-1"; else sites/vectors by norm) that
        moved most from the identity, with their values (alpha, |v| or |w|, b)."""
        rows = []
        for name, d in self.deviation().items():
            d = d.detach()
            if self.method == "activscalar":
                rows += [(f"{name}@{-1 - j}", float(d[j]) + 1, abs(float(d[j]))) for j in range(d.shape[0])]
            elif self.method == "steervec":
                rows += [(f"{name}@{-1 - j}", float(d[j].norm()), float(d[j].norm())) for j in range(d.shape[0])]
            else:
                rows.append((name, float(self.params[name][-1].detach()), float(d.norm())))
        return [(name, value) for name, value, _ in sorted(rows, key=lambda r: -r[2])[:k]]

    def to_plan(self) -> Plan:
        """The same intervention as core Plan entries, for `nl.apply`. Positions count from the end of each
        forward call's sequence, so run prompts unpadded or left-padded (as `generate` does)."""
        ivs = []
        for name, p in self.params.items():
            site = Site.parse(name)
            if self.method == "dynscalar":
                ivs.append(DynScale(site=site.kind, layers=[site.layer], value=p.detach().clone()))
                continue
            for j in range(p.shape[0]):
                where = dict(site=site.kind, layers=[site.layer], positions=slice(-j - 1, -j or None))
                if self.method == "activscalar":
                    ivs.append(Scale(factor=float(p[j].detach()), **where))
                else:
                    ivs.append(Add(value=p[j].detach().clone(), **where))
        return Plan(ivs)

    def check_model(self, model) -> None:
        differs = same_model(self.meta.get("model", {}), model_info(model))
        if differs:
            raise NeuronlabError(f"this intervention was learned on another model ({differs}); train it on this one")

    def save(self, path: str | Path) -> None:
        tensors = {k: v.detach().float().cpu() for k, v in self.params.items()}
        write_safetensors(path, tensors, FORMAT, method=self.method, meta=json.dumps(self.meta))

    @classmethod
    def load(cls, path: str | Path) -> Scaling:
        tensors, header = read_safetensors(path, FORMAT, "learned intervention")
        if header.get("method") not in METHODS:
            raise NeuronlabError(f"{path}: unknown method {header.get('method')!r}")
        return cls(header["method"], tensors, json.loads(header.get("meta", "{}")))


# ---------------------------------------------------------------- encoding items


@dataclass
class _Encoded:
    ids: list[list[int]]
    target: Tensor  # [n] first token of each target
    foil: Tensor


def _encode(tokenizer, items: Sequence[dict]) -> _Encoded:
    ids, target, foil = [], [], []
    for i, item in enumerate(items):
        p, t = continuation_ids(tokenizer, item["prompt"], item["target"])
        _, f = continuation_ids(tokenizer, item["prompt"], item["foil"])
        if not p or not t or not f:
            raise NeuronlabError(f"item {i + 1} ({item['prompt'][:40]!r}): prompt, target or foil has no tokens")
        if t[0] == f[0]:
            raise NeuronlabError(f"item {i + 1}: target {item['target']!r} and foil {item['foil']!r} start with the "
                                 "same token; the logit difference is taken on the first token, so make them differ")  # fmt: skip
        ids.append(p)
        target.append(t[0])
        foil.append(f[0])
    return _Encoded(ids, torch.tensor(target), torch.tensor(foil))


def _batches(enc: _Encoded, batch_size: int, shuffle: random.Random | None = None) -> list[list[int]]:
    """Item indices in batches of equal token length (no padding, so positions from the end line up)."""
    by_len: dict[int, list[int]] = {}
    for i, row in enumerate(enc.ids):
        by_len.setdefault(len(row), []).append(i)
    out = []
    for idx in by_len.values():
        if shuffle is not None:
            shuffle.shuffle(idx)
        out += [idx[s : s + batch_size] for s in range(0, len(idx), batch_size)]
    if shuffle is not None:
        shuffle.shuffle(out)
    return out


def _last_logits(model, enc: _Encoded, idx: list[int]) -> Tensor:
    ids = torch.tensor([enc.ids[i] for i in idx], device=input_device(model))
    keep = {"logits_to_keep": 1} if forward_takes(model, "logits_to_keep") else {}
    z = model(input_ids=ids, **keep).logits[:, -1]  # [batch, vocab]; only the last position is unembedded
    return z if z.dtype == torch.float64 else z.float()


def _base_logits(model, enc: _Encoded, batch_size: int) -> Tensor:
    """Last-position logits of every item, in item order, on the CPU: [n, vocab]."""
    order, parts = [], []
    with torch.no_grad():
        for idx in _batches(enc, batch_size):
            order += idx
            parts.append(_last_logits(model, enc, idx).cpu())
    return torch.cat(parts)[torch.argsort(torch.tensor(order))]


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


def _hook(method: str, p: Tensor):
    if method == "dynscalar":
        return lambda h: h * dyn_alpha(h, p[:-1], p[-1])[..., None].to(h.dtype)

    def fn(h: Tensor) -> Tensor:  # h: [batch, pos, width]; p[j] belongs to position -1 - j
        k = min(p.shape[0], h.shape[1])
        part = p[:k].flip(0).to(h.dtype)
        if method == "activscalar":
            return torch.cat([h[:, : h.shape[1] - k], h[:, h.shape[1] - k :] * part[None, :, None]], 1)
        return torch.cat([h[:, : h.shape[1] - k], h[:, h.shape[1] - k :] + part[None]], 1)

    return fn


@contextmanager
def scaled(model, scaling: Scaling):
    """Run `model` with a Scaling's differentiable hooks (training); `nl.apply(model, s.to_plan())` is the
    same intervention through the core's hooks."""
    with hooked(model, {Site.parse(k): _hook(scaling.method, p) for k, p in scaling.params.items()}):
        yield


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


def objective(model, scaling: Scaling, enc: _Encoded, z0: Tensor, idx: list[int], cfg: ScalingConfig) -> dict[str, Tensor]:
    """Loss terms for one batch (see module doc); "loss" is their weighted sum."""
    with scaled(model, scaling):
        z = _last_logits(model, enc, idx)
    base = z0[idx].to(z.device)
    eff = F.softplus(-logit_diff(z, enc.target[idx], enc.foil[idx])).mean()
    kl = rest_kl(base, z, enc.target[idx], enc.foil[idx]).mean()
    l1 = sum(d.abs().sum() for d in scaling.deviation().values())
    loss = cfg.effectiveness * eff + cfg.faithfulness * kl + cfg.minimality * l1
    return {"loss": loss, "effectiveness": eff, "faithfulness": kl, "minimality": l1}


# ---------------------------------------------------------------- training and evaluation


def init_scaling(model, cfg: ScalingConfig, positions: int) -> Scaling:
    """Identity parameters (alpha = 1, v = 0, w = 0 and b = 1) on every chosen site, float32, requiring grad."""
    n_layers = len(decoder_layers(model))
    layers = range(n_layers) if cfg.layers is None else cfg.layers
    params = {}
    for layer in layers:
        if not 0 <= layer < n_layers:
            raise NeuronlabError(f"layer {layer} is out of range: this model has layers 0..{n_layers - 1}")
        device = next(decoder_layers(model)[layer].parameters()).device
        for kind in cfg.components:
            d = site_width(model, kind)
            if cfg.method == "activscalar":
                p = torch.ones(positions)
            elif cfg.method == "steervec":
                p = torch.zeros(positions, d)
            else:
                p = torch.cat([torch.zeros(d), torch.ones(1)])
            params[str(Site(layer, kind))] = p.to(device).requires_grad_(True)
    return Scaling(cfg.method, params, {"model": model_info(model), "config": asdict(cfg), "positions": positions})


def _mean_loss(model, scaling, enc, z0, cfg) -> float:
    total, n = 0.0, 0
    with torch.no_grad():
        for idx in _batches(enc, cfg.batch_size):
            total += float(objective(model, scaling, enc, z0, idx, cfg)["loss"]) * len(idx)
            n += len(idx)
    return total / n


def train_scaling(model, tokenizer, items: Sequence[dict], cfg: ScalingConfig = ScalingConfig(),
                  progress: bool = True) -> Scaling:  # fmt: skip
    """Learn `cfg.method` on `items` by Adam on the three-part objective (module doc); early stopping on a
    validation share of the groups. Returns the best parameters, detached, with a training history in meta."""
    from tqdm.auto import tqdm

    items = check_items(items, "the training items")
    if cfg.val_fraction > 0 and len({i["group"] for i in items}) >= 2:
        fit, val = split(items, cfg.val_fraction, cfg.seed)
    else:
        fit, val = list(items), []
    enc, venc = _encode(tokenizer, fit), _encode(tokenizer, val) if val else None
    positions = cfg.positions or max(len(r) for r in enc.ids)
    torch.manual_seed(cfg.seed)
    scaling = init_scaling(model, cfg, positions)
    opt = torch.optim.Adam(list(scaling.params.values()), lr=cfg.lr)
    rng = random.Random(cfg.seed)
    history: list[dict] = []
    with _frozen(model):
        z0 = _base_logits(model, enc, cfg.batch_size)
        vz0 = _base_logits(model, venc, cfg.batch_size) if venc else None
        best, best_loss, since = None, float("inf"), 0
        bar = tqdm(range(cfg.epochs), desc=f"train {cfg.method}", disable=not progress, dynamic_ncols=True)
        for epoch in bar:
            terms = {"loss": 0.0, "effectiveness": 0.0, "faithfulness": 0.0, "minimality": 0.0}
            for idx in _batches(enc, cfg.batch_size, rng):
                out = objective(model, scaling, enc, z0, idx, cfg)
                opt.zero_grad()
                out["loss"].backward()
                opt.step()
                for k in terms:
                    terms[k] += float(out[k].detach()) * len(idx) / len(fit)
            val_loss = _mean_loss(model, scaling, venc, vz0, cfg) if venc else terms["loss"]
            history.append({"epoch": epoch + 1, **{k: round(v, 6) for k, v in terms.items()}, "val_loss": round(val_loss, 6)})
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
    meta = {**scaling.meta, "history": history, "best_val_loss": best_loss,
            "train_groups": sorted({i["group"] for i in fit}), "val_groups": sorted({i["group"] for i in val})}  # fmt: skip
    return Scaling(cfg.method, best, meta)


def evaluate_scaling(model, tokenizer, scaling: Scaling, items: Sequence[dict], batch_size: int = 32,
                     eps: float = 0.1) -> dict:  # fmt: skip
    """Effectiveness, faithfulness and minimality on `items`, the intervention applied through `nl.apply`:
    accuracy_before / success (share with target above foil, without / with), flip_rate (success among the
    items the model got "wrong" before: None if there are none), mean logit difference before, after and its
    change, mean KL on the other tokens, and parameters, L1 and scalars moved more than eps."""
    scaling.check_model(model)
    enc = _encode(tokenizer, check_items(items, "the evaluation items"))
    with torch.no_grad():
        z0 = _base_logits(model, enc, batch_size)
        with apply(model, scaling.to_plan()):
            z = _base_logits(model, enc, batch_size)
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
