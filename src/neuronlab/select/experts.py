"""Expert neurons (Suau et al.; Fedzechkina et al. 2025, arXiv 2502.15090): neurons whose response ranks a concept's
sentences above other sentences.

    concepts = read_concepts("concepts.jsonl")                       # {concept: {"positive", "negative"}}
    resp = responses(model, tok, sentence_list(concepts), site="act")  # [sentences, layers, neurons], pooled
    ex = expertise(resp, concepts)                                    # AP, AUROC, on_p50, ... per concept
    ns = ex.experts(tau=0.5)                                         # NeuronSet: concept -> layer -> neurons

A neuron's response to a sentence is its value at `site` pooled over the sentence's tokens (max by default, or
mean; padding and special tokens never count). Memory is sentences x layers x neurons values (2 bytes each in
float16), never tokens. Per concept, AP is the average precision of the responses with the concept's sentences as
positives and its negatives as negatives (scikit-learn's `average_precision_score`, ties included), AUROC the area
under the ROC curve (ties count one half), on_p50 / on_p90 the median / 90th percentile over the positives and
off_mean the mean over the negatives.

Experts of a concept are the neurons whose AP lies at least `tau` of the way from chance to 1: AP >= chance +
tau (1 - chance), where chance = positives / (positives + negatives) is the AP of a neuron that ranks at random.
With as many negatives as positives (chance 0.5) tau 0.5 asks for AP >= 0.75; an absolute AP >= 0.5 would pass
about half of all neurons there and make any set comparison measure set sizes. An Expertise saved before chance
was stored takes tau as an absolute AP and says so.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from neuronlab.artifacts import register_artifact
from neuronlab.data.batching import batches, model_inputs, pad_id, windows
from neuronlab.dist import all_reduce, hand_over, own_files, rank_path, world
from neuronlab.errors import NeuronlabError
from neuronlab.io import check_writable, read_safetensors, write_safetensors
from neuronlab.models.load import model_info
from neuronlab.models.sites import KINDS, Site, decoder_layers, site_width, trace
from neuronlab.select.neuron_set import NeuronSet
from neuronlab.select.ranking import auroc, average_precision

RESPONSES_FORMAT = "neuronlab.responses/1"
EXPERTISE_FORMAT = "neuronlab.expertise/1"
MEASURES = ("ap", "auroc", "on_p50", "on_p90", "off_mean")


# ---------------------------------------------------------------- responses


def responses(
    model,
    tokenizer,
    sentences: Sequence[str],
    site: str = "act",
    pool: str = "max",
    batch_size: int = 16,
    max_length: int = 128,
    dtype: torch.dtype = torch.float16,
    checkpoint: str | Path | None = None,
    checkpoint_every: float = 300.0,
    progress: bool = True,
) -> Tensor:
    """Pooled response of every neuron of `site` to each sentence: [sentences, layers, width] in `dtype` (module
    doc). Sentences are cut at `max_length` tokens. With `checkpoint`, the responses so far are saved there
    every `checkpoint_every` seconds and at the end, and a later call continues after the last saved sentence.
    Under torch.distributed each rank takes a block of the sentences (checkpointing to its own file beside
    `checkpoint`) and every rank returns all of them, in order."""
    if pool not in ("max", "mean"):
        raise NeuronlabError(f"pool must be 'max' or 'mean', not {pool!r}")
    if site not in KINDS:
        raise NeuronlabError(f"unknown site kind {site!r}: use one of {', '.join(KINDS)}")
    if not sentences:
        raise NeuronlabError("no sentences to respond to")
    if checkpoint is not None:
        check_writable(checkpoint)
    rank, size = world()
    if size > 1:  # each rank takes a contiguous block; the blocks are put together in order on every rank
        lo, hi = rank * len(sentences) // size, (rank + 1) * len(sentences) // size
        mine = None if checkpoint is None else rank_path(checkpoint, rank, size)
        if checkpoint is not None and Path(checkpoint).is_file():  # a finished run: nothing left to do
            shape = (len(sentences), len(decoder_layers(model)), site_width(model, site))
            out, done = _resume(checkpoint, _info(model, sentences, site, pool, max_length), torch.zeros(shape))
            if done < len(sentences):
                raise NeuronlabError(
                    f"{checkpoint} holds an unfinished run of one process: resume it with one "
                    "process, or write to another path"
                )
            return out.to(dtype)
        with own_files():
            part = _responses(
                model,
                tokenizer,
                sentences[lo:hi],
                site,
                pool,
                batch_size,
                max_length,
                dtype,
                mine,
                checkpoint_every,
                progress and rank == 0,
            )
        full = torch.zeros(len(sentences), *part.shape[1:], dtype=torch.float32)
        full[lo:hi] = part.float()  # exact: the other blocks add zeros
        out = all_reduce(full).to(dtype)
        if checkpoint is not None and mine is not None:
            info = lambda: _info(model, sentences, site, pool, max_length)  # noqa: E731  (rank 0 only)
            hand_over(mine, lambda: _save(checkpoint, out, len(sentences), info()))
        return out
    return _responses(
        model,
        tokenizer,
        sentences,
        site,
        pool,
        batch_size,
        max_length,
        dtype,
        checkpoint,
        checkpoint_every,
        progress,
    )


def _info(model, sentences, site, pool, max_length) -> dict:
    return {
        "model": model_info(model),
        "site": site,
        "pool": pool,
        "max_length": max_length,
        "sentences": len(sentences),
    }


def _responses(
    model, tokenizer, sentences, site, pool, batch_size, max_length, dtype, checkpoint, checkpoint_every, progress
) -> Tensor:
    from tqdm.auto import tqdm

    n_layers, width = len(decoder_layers(model)), site_width(model, site)
    info = _info(model, sentences, site, pool, max_length)
    out, done = torch.zeros(len(sentences), n_layers, width, dtype=dtype), 0
    if checkpoint is not None and Path(checkpoint).is_file():
        out, done = _resume(checkpoint, info, out)
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
    sites = [Site(layer, site) for layer in range(n_layers)]
    bar = tqdm(total=len(sentences), initial=done, desc="responses", disable=not progress, dynamic_ncols=True)
    last_save = time.monotonic()
    rows = windows(tokenizer, sentences, done, max_length, truncate=True)
    with torch.no_grad():
        for batch in batches(rows, batch_size, pad_id(tokenizer, model), special, count_special=False):
            count = batch.count
            empty = [batch.text[r] for r in range(count.shape[0]) if not bool(count[r].any())]
            if empty:
                raise NeuronlabError(f"sentence {empty[0]} has no token to pool (it is empty or only special tokens)")

            def pooled(
                _site: Site, h: Tensor, count: Tensor = count
            ) -> Tensor:  # [batch, pos, width] -> [batch, width]
                c = count.to(h.device)[..., None]
                if pool == "max":
                    return h.float().masked_fill(~c, float("-inf")).amax(1).cpu()
                return (h.float() * c).sum(1).div(c.sum(1)).cpu()

            with trace(model, sites, stop=True, reduce=pooled) as tr:
                model(**model_inputs(model, batch.input_ids, batch.attention_mask), use_cache=False)
            rows_idx = torch.tensor(batch.text)
            out[rows_idx] = torch.stack([tr[s] for s in sites], 1).to(dtype)
            done = batch.text[-1] + 1
            bar.update(len(batch.text))
            if checkpoint is not None and time.monotonic() - last_save > checkpoint_every:
                _save(checkpoint, out, done, info)
                last_save = time.monotonic()
    bar.close()
    if checkpoint is not None:
        _save(checkpoint, out, done, info)
    return out


def _save(path, out: Tensor, done: int, info: dict) -> None:
    write_safetensors(path, {"responses": out[:done]}, RESPONSES_FORMAT, info=json.dumps(info), done=str(done))


def _resume(path, info: dict, out: Tensor) -> tuple[Tensor, int]:
    from neuronlab.models.load import same_model

    tensors, header = read_safetensors(path, RESPONSES_FORMAT, "responses")
    saved = json.loads(header["info"])
    differs = same_model(saved.get("model", {}), info["model"])
    if differs or any(saved.get(k) != info[k] for k in ("site", "pool", "max_length", "sentences")):
        raise NeuronlabError(
            f"{path} holds responses made another way ({differs or 'site, pooling or sentences'}): "
            "use another checkpoint path, or the same model and settings to resume"
        )
    done = int(header["done"])
    out[:done] = tensors["responses"].to(out.dtype)
    return out, done


def load_responses(path: str | Path) -> tuple[Tensor, dict]:
    tensors, header = read_safetensors(path, RESPONSES_FORMAT, "responses")
    return tensors["responses"], json.loads(header["info"])


# ---------------------------------------------------------------- expertise


@dataclass
class Expertise:
    """Per concept and neuron: AP, AUROC, on_p50, on_p90, off_mean (float32 [concepts, layers, width]) and
    provenance (model, site, pooling, concepts' sentence counts)."""

    concepts: list[str]
    measures: dict[str, Tensor]
    meta: dict = field(default_factory=dict)

    def __getitem__(self, measure: str) -> Tensor:
        if measure not in self.measures:
            raise NeuronlabError(f"unknown measure {measure!r}: use one of {', '.join(self.measures)}")
        return self.measures[measure]

    def index(self, concept: str) -> int:
        if concept not in self.concepts:
            raise NeuronlabError(
                f"concept {concept!r} is not in this expertise; it holds {len(self.concepts)} concepts"
            )
        return self.concepts.index(concept)

    @property
    def chance(self) -> list[float]:
        """Per concept, the AP of a random ranking: positives / (positives + negatives) (0 where not stored)."""
        return [float(c) for c in self.meta.get("chance") or [0.0] * len(self.concepts)]

    def threshold(self, tau: float) -> list[float]:
        """Per concept, the AP an expert needs: chance + tau (1 - chance) (module doc)."""
        if not 0 <= tau <= 1:
            raise NeuronlabError(f"tau must lie in [0, 1] (a share of the way from chance AP to 1), not {tau}")
        return [c + tau * (1 - c) for c in self.chance]

    def experts(self, tau: float = 0.5) -> NeuronSet:
        """Experts per concept: neurons with AP >= chance + tau (1 - chance), as a NeuronSet (site, model, tau in
        its meta)."""
        ap = self["ap"]
        sets = {}
        for c, (concept, need) in enumerate(zip(self.concepts, self.threshold(tau), strict=True)):
            layer, neuron = torch.nonzero(ap[c] >= need, as_tuple=True)
            split = neuron.split(torch.bincount(layer, minlength=ap.shape[1]).tolist())
            sets[concept] = {lay: idx.tolist() for lay, idx in enumerate(split) if len(idx)}
        meta = {
            "method": "experts",
            "tau": tau,
            "site": self.meta.get("site", "act"),
            "model": self.meta.get("model", {}),
        }
        return NeuronSet(sets, meta)

    def top(self, concept: str, k: int, measure: str = "ap") -> list[tuple[int, int, float]]:
        """The k neurons with the highest `measure` for `concept`: (layer, neuron, value)."""
        values = self[measure][self.index(concept)]
        best = values.flatten().topk(min(k, values.numel()))
        width = values.shape[-1]
        return [(int(i) // width, int(i) % width, float(v)) for v, i in zip(best.values, best.indices, strict=True)]

    def save(self, path: str | Path) -> None:
        write_safetensors(
            path, self.measures, EXPERTISE_FORMAT, concepts=json.dumps(self.concepts), meta=json.dumps(self.meta)
        )

    @classmethod
    def load(cls, path: str | Path) -> Expertise:
        tensors, header = read_safetensors(path, EXPERTISE_FORMAT, "expertise")
        return cls(json.loads(header["concepts"]), tensors, json.loads(header.get("meta", "{}")))

    def summary(self) -> str:
        ap = self["ap"]
        n = {tau: self.experts(tau).total() for tau in (0.5, 0.7, 0.9)}
        chance = self.chance
        base = (
            f"chance AP {min(chance):.2f}-{max(chance):.2f}"
            if "chance" in self.meta
            else "chance not stored: tau is an absolute AP"
        )
        return (
            f"expertise of {len(self.concepts)} concepts over {ap.shape[1]} layers x {ap.shape[2]} neurons "
            f"({self.meta.get('site', '?')}, {self.meta.get('pool', '?')} pooling; {base}): experts at tau 0.5 / "
            f"0.7 / 0.9 of the way from chance to AP 1: {n[0.5]} / {n[0.7]} / {n[0.9]}; best AP {float(ap.max()):.3f}"
        )


def expertise(
    resp: Tensor, concepts: dict[str, dict], index: dict[str, int], meta: dict | None = None, progress: bool = False
) -> Expertise:
    """Expertise of every neuron for every concept. `resp` [sentences, layers, width] are the pooled responses,
    `index` maps each sentence to its row, `concepts` {concept: {"positive": [...], "negative": [...]}}."""
    from tqdm.auto import tqdm

    _n, layers, width = resp.shape
    out = {m: torch.empty(len(concepts), layers, width, dtype=torch.float32) for m in MEASURES}
    chance = [len(s["positive"]) / (len(s["positive"]) + len(s["negative"])) for s in concepts.values()]
    for c, sets in enumerate(tqdm(concepts.values(), desc="expertise", disable=not progress)):
        pos = torch.tensor([index[s] for s in sets["positive"]])
        neg = torch.tensor([index[s] for s in sets["negative"]])
        scores = torch.cat([resp[pos], resp[neg]]).reshape(len(pos) + len(neg), -1).double()
        labels = torch.cat([torch.ones(len(pos), dtype=torch.bool), torch.zeros(len(neg), dtype=torch.bool)])
        on = scores[: len(pos)]
        values = {
            "ap": average_precision(scores, labels),
            "auroc": auroc(scores, labels),
            "on_p50": on.quantile(0.5, dim=0),
            "on_p90": on.quantile(0.9, dim=0),
            "off_mean": scores[len(pos) :].mean(0),
        }
        for m, v in values.items():
            out[m][c] = v.reshape(layers, width).float()
    return Expertise(list(concepts), out, {**(meta or {}), "chance": chance})


def _responses_summary(loaded: tuple[Tensor, dict]) -> str:
    resp, info = loaded
    model = info.get("model", {}).get("name_or_path") or "?"
    return (
        f"pooled responses on {model} at site {info.get('site', '?')} ({info.get('pool', '?')} over tokens): "
        f"{resp.shape[0]} sentences x {resp.shape[1]} layers x {resp.shape[2]} neurons, {resp.dtype}"
    )


register_artifact("expertise", [EXPERTISE_FORMAT], Expertise.load)
register_artifact("responses", [RESPONSES_FORMAT], load_responses, _responses_summary)
