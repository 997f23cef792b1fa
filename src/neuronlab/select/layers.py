"""Which layers handle languages: SLAM's layer selection (Fan et al. 2025, arXiv 2501.03681) from per-language Stats.

    stats = nl.record(model, tok, {"en": en, "fr": fr, "zh": zh}, site="act")
    sel = nl.select_layers(stats, k=6)              # LayerSelection: .layers (sorted), .scores (one per layer)
    sel.save("layers.json"); sel = LayerSelection.load("layers.json")
    nl.freeze_except_ffn(model, sel.layers)         # then fine-tune only those FFNs (learn/finetune.py)

Per layer l and language L, A_{l,L} is the set of neurons activated for L: those that fire (act > 0) on more than
`threshold` of L's tokens. x_{l,L} is |A_{l,L}| (method "msd") or the overlap |A_{l,L} & A_{l,ref}| / |A_{l,L}| with the
reference language (method "overlap"; 0 where A_{l,L} is empty; the reference itself is left out). The layer's
score is the mean squared deviation over languages, MSD_l = mean_L (x_{l,L} - mean_L x_{l,L})^2, and the k layers
with the highest scores are chosen (ties: the lower layer). Baselines with the same k: "lowest" (layers 0..k-1),
"random" (seeded) and "all".
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import torch

from neuronlab.artifacts import register_artifact
from neuronlab.config import Config, configured, option
from neuronlab.errors import NeuronlabError
from neuronlab.io import read_json, write_json
from neuronlab.models.sites import check_layers
from neuronlab.record.stats import Stats

FORMAT = "neuronlab.layers/1"
LayerMethod = Literal["msd", "overlap", "lowest", "random", "all"]
METHODS: tuple[str, ...] = get_args(LayerMethod)


@dataclass(frozen=True)
class LayerConfig(Config):
    """The arguments of `select_layers`."""

    k: int = option(6, "layers to choose (SLAM: 6 of LLaMA-2-7B's 32)")
    method: LayerMethod = option(
        "msd",
        "msd (spread of activated-neuron counts over languages), overlap (spread of the "
        "overlap with the reference language), or the baselines lowest, random, all",
    )
    threshold: float = option(
        0.5,
        "a neuron is activated for L when it fires (act > 0) on more than this share of "
        "L's tokens: with SiLU/GELU about half of a neuron's values are positive by "
        "chance, so 0.5 keeps the neurons a language drives above that background",
    )
    reference: str = option("en", "reference language of the overlap method")
    seed: int = option(0, "seed of the random baseline")

    def check(self) -> None:
        if self.k < 1:
            raise NeuronlabError(f"k must be at least 1, got {self.k}")
        if not 0 <= self.threshold < 1:
            raise NeuronlabError(f"threshold must be in [0, 1), got {self.threshold}")


@dataclass
class LayerSelection:
    """Chosen layers with the per-layer scores behind them and provenance (model, stats, method, threshold)."""

    layers: list[int]  # sorted
    scores: list[float]  # one per layer (NaN for the baselines)
    per_language: dict[str, list[float]] = field(default_factory=dict)  # x_{l,L}: language -> one value per layer
    meta: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> None:
        write_json(
            path,
            {
                "format": FORMAT,
                "layers": self.layers,
                "scores": self.scores,
                "per_language": self.per_language,
                "meta": self.meta,
            },
        )

    @classmethod
    def load(cls, path: str | Path) -> LayerSelection:
        data = read_json(path, "layer selection", (FORMAT,))
        try:
            return cls(
                sorted(int(x) for x in data["layers"]),
                [float(x) for x in data["scores"]],
                data.get("per_language", {}),
                data.get("meta", {}),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise NeuronlabError(f"{path}: the layer selection is damaged ({err}); select the layers again") from None

    def check_model(self, model) -> None:
        """Raise unless the selection was made on `model` and its layers exist there."""
        from neuronlab.models.load import require_same_model
        from neuronlab.models.sites import decoder_layers

        require_same_model(self.meta.get("model"), model, "this layer selection")
        check_layers(self.layers, len(decoder_layers(model)))

    def summary(self) -> str:
        m = self.meta
        lines = [
            f"layer selection ({m.get('method', '?')}, k={m.get('k', len(self.layers))}) on "
            f"{m.get('model', {}).get('name_or_path') or '?'}: layers {self.layers}"
        ]
        if any(s == s for s in self.scores):  # not all NaN
            lines.append("  score per layer: " + " ".join(f"{i}:{s:.4g}" for i, s in enumerate(self.scores)))
        return "\n".join(lines)


def activated_sets(stats: Stats, threshold: float) -> torch.Tensor:
    """bool [languages, layers, neurons]: neuron activated for the language (fires on > threshold of its tokens)."""
    if stats.site not in ("act", "neuron"):
        raise NeuronlabError(f"layer selection counts FFN neurons: record the stats at site act, not {stats.site}")
    if not 0 <= threshold < 1:
        raise NeuronlabError(f"threshold must be in [0, 1), got {threshold}")
    return stats.probability > threshold


def select_layers(stats: Stats, config: LayerConfig | None = None, **settings: Any) -> LayerSelection:
    """The k layers that handle languages (module doc); `method` msd | overlap | lowest | random | all. Settings:
    `config` (a LayerConfig) or its fields as keywords (`k=6, method="overlap"`)."""
    cfg = configured(LayerConfig, config, settings, "select_layers")
    k, method, threshold, reference, seed = cfg.k, cfg.method, cfg.threshold, cfg.reference, cfg.seed
    n = stats.n_layers
    if not 1 <= k <= n:
        raise NeuronlabError(f"k must be between 1 and the model's {n} layers, got {k}")
    meta = {
        "method": method,
        "k": k,
        "threshold": threshold,
        "model": stats.meta.get("model", {}),
        "groups": stats.groups,
        "site": stats.site,
    }
    nan = [float("nan")] * n
    if method == "lowest":
        return LayerSelection(list(range(k)), nan, {}, meta)
    if method == "random":
        return LayerSelection(sorted(random.Random(seed).sample(range(n), k)), nan, {}, {**meta, "seed": seed})
    if method == "all":
        return LayerSelection(list(range(n)), nan, {}, {**meta, "k": n})
    active = activated_sets(stats, threshold)  # [langs, layers, neurons]
    counts = active.sum(-1).double()  # [langs, layers]
    langs = list(stats.groups)
    if method == "overlap":
        ref = stats.index(reference)
        shared = (active & active[ref : ref + 1]).sum(-1).double()
        x = torch.where(counts > 0, shared / counts.clamp(min=1), torch.zeros_like(counts))
        keep = [i for i in range(len(langs)) if i != ref]
        x, langs = x[keep], [langs[i] for i in keep]
        meta["reference"] = reference
    else:
        x = counts
    if len(langs) < 2:
        raise NeuronlabError("layer selection compares languages: record at least two (three with overlap)")
    msd = (x - x.mean(0, keepdim=True)).square().mean(0)  # [layers]
    order = sorted(range(n), key=lambda layer: (-float(msd[layer]), layer))
    per_language = {lang: [float(v) for v in x[i]] for i, lang in enumerate(langs)}
    return LayerSelection(sorted(order[:k]), [float(v) for v in msd], per_language, meta)


def parse_layers(spec: str | Path, n_layers: int | None = None) -> tuple[list[int], LayerSelection | None]:
    """Layers from a LayerSelection file, or text such as "0-5" or "1,3,5" (checked against n_layers if given)."""
    text = str(spec)
    if text.endswith(".json") or Path(text).is_file():
        sel = LayerSelection.load(text)
        return sel.layers, sel
    layers: set[int] = set()
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            layers.update(range(int(lo), int(hi) + 1) if hi else [int(lo)])
    except ValueError:
        raise NeuronlabError(
            f"cannot read layers {text!r}: give a layers.json, a range like 0-5 or a list like 1,3,5"
        ) from None
    chosen = sorted(layers)
    if n_layers is not None:
        check_layers(chosen, n_layers)
    return chosen, None


register_artifact("layer selection", [FORMAT], LayerSelection.load)
