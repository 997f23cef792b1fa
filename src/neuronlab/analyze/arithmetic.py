"""Word2vec-style arithmetic in FFN outputs (Merullo et al. 2024): relation prompts, o-vectors, patching and
ablation.

    pairs = read_pairs("world_capitals.csv")                   # [("Poland", "Warsaw"), ...]
    items = relation_items(pairs, template="{x}: {y}", shots=2)  # [{"prompt", "target"}]
    score_relation(model, tok, items)                          # accuracy, reciprocal rank, multi-token share
    o = extract_o_vector(model, tok, [i["prompt"] for i in items], layer=12)   # mean FFN output, last position
    patch_o_vector(model, tok, o, layers=[12], items=nonsense_items)           # does o alone carry it?
    ablate_from(model, tok, items)                             # accuracy with FFN outputs zeroed from layer l on

Scores look at the first token of the target (in context, see `continuation_ids`): accuracy is the share of
items whose first target token is the model's top-1 next token; reciprocal rank is 1 / (1 + its rank).
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from neuronlab.artifacts import register_artifact
from neuronlab.data.batching import left_padded, model_inputs, pad_id, pad_right
from neuronlab.data.scoring import continuation_ids
from neuronlab.errors import NeuronlabError
from neuronlab.intervene.apply import apply
from neuronlab.intervene.plan import Add, Plan, Set, Zero
from neuronlab.io import read_safetensors, write_safetensors
from neuronlab.models.sites import Site, decoder_layers, trace

VECTOR_FORMAT = "neuronlab.vector/1"


def read_pairs(path: str | Path) -> list[tuple[str, str]]:
    """(input, output) pairs from a CSV (first two columns, header row) or a JSON list of {input, output}."""
    path = Path(path)
    if not path.is_file():
        raise NeuronlabError(f"no pairs file at {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            pairs = [(d["input"], d["output"]) for d in json.loads(text)]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise NeuronlabError(f"{path}: expected a JSON list of {{input, output}} ({err})") from err
    else:
        rows = list(csv.reader(text.splitlines()))
        pairs = [(r[0], r[1]) for r in rows[1:] if len(r) >= 2 and r[0] and r[1]]
    if not pairs:
        raise NeuronlabError(f"{path} has no pairs")
    return pairs


def relation_items(
    pairs: Sequence[tuple[str, str]], template: str = "{x}: {y}", shots: int = 2, sep: str = "\n", seed: int = 0
) -> list[dict]:
    """Few-shot prompts: `shots` other pairs filled into `template`, then the query with {y} left open.
    Whitespace before {y} moves into the target (" Warsaw"), as tokenizers expect."""
    if "{x}" not in template or not template.rstrip().endswith("{y}"):
        raise NeuronlabError("the template needs {x} and must end with {y}, e.g. '{x}: {y}'")
    if len(pairs) <= shots:
        raise NeuronlabError(f"{len(pairs)} pairs are too few for {shots} in-context examples")
    head = template[: template.rindex("{y}")]
    stem, gap = head.rstrip(), head[len(head.rstrip()) :]
    rng = random.Random(seed)
    items = []
    for i, (x, y) in enumerate(pairs):
        others = rng.sample([p for j, p in enumerate(pairs) if j != i], shots)
        examples = [template.format(x=a, y=b) for a, b in others]
        items.append({"prompt": sep.join([*examples, stem.format(x=x)]), "target": gap + y, "input": x, "output": y})
    return items


def _last_logits(model, tokenizer, prompts: Sequence[str], batch_size: int) -> Tensor:
    """Next-token logits after each prompt, float32 [n, vocab] (left padding: the last position is the end)."""
    out = []
    for _, enc in left_padded(model, tokenizer, prompts, batch_size, positions=True):
        with torch.no_grad():
            out.append(model(**enc, use_cache=False).logits[:, -1].float().cpu())
    return torch.cat(out)


def _greedy_matches(model, rows: list[tuple[list[int], list[int]]], pad: int, batch_size: int) -> list[bool]:
    """Whether greedy decoding after each prompt produces exactly the target's tokens (teacher-forced check:
    the argmax at every target position is the next target token)."""
    out = []
    for start in range(0, len(rows), batch_size):
        part = rows[start : start + batch_size]
        ids, mask = pad_right([p + c for p, c in part], pad)
        with torch.no_grad():
            pred = model(**model_inputs(model, ids, mask), use_cache=False).logits.argmax(-1)
        for r, (p, c) in enumerate(part):
            out.append(pred[r, len(p) - 1 : len(p) + len(c) - 1].tolist() == c)
    return out


def score_relation(model, tokenizer, items: Sequence[dict], batch_size: int = 16, exact: bool = True) -> dict:
    """{"accuracy" (first target token top-1), "exact" (greedy decoding gives the whole target; None with
    `exact=False`, which saves a second forward pass), "reciprocal_rank", "multi_token" (share of targets
    longer than one token), "ranks"}."""
    if not items:
        raise NeuronlabError("no items to score")
    rows = [continuation_ids(tokenizer, item["prompt"], item["target"]) for item in items]
    for item, (_, ids) in zip(items, rows, strict=True):
        if not ids:
            raise NeuronlabError(f"target {item['target']!r} has no tokens")
    logits = _last_logits(model, tokenizer, [i["prompt"] for i in items], batch_size)
    target = logits[torch.arange(len(items)), torch.tensor([c[0] for _, c in rows])]
    ranks = (logits > target[:, None]).sum(-1)
    matches = _greedy_matches(model, rows, pad_id(tokenizer, model), batch_size) if exact else None
    return {
        "accuracy": float((ranks == 0).float().mean()),
        "exact": sum(matches) / len(matches) if matches is not None else None,
        "reciprocal_rank": float((1.0 / (1 + ranks.float())).mean()),
        "multi_token": sum(len(c) > 1 for _, c in rows) / len(rows),
        "ranks": ranks.tolist(),
    }


def extract_o_vector(
    model,
    tokenizer,
    prompts: Sequence[str],
    layer: int,
    site: str = "ffn_out",
    batch_size: int = 16,
) -> Tensor:
    """Mean over `prompts` of the FFN output (or another site) at the last position, float32 [d_model]."""
    if not prompts:
        raise NeuronlabError("give at least one prompt")
    total: Tensor | None = None
    count = 0
    for _, enc in left_padded(model, tokenizer, prompts, batch_size, positions=True):
        last = lambda _site, h: h[:, -1].float()  # noqa: E731
        with torch.no_grad(), trace(model, [Site(layer, site)], stop=True, reduce=last) as seen:
            model(**enc, use_cache=False)
        h = seen[Site(layer, site)]
        part = h.sum(0).cpu()
        total = part if total is None else total + part
        count += h.shape[0]
    assert total is not None  # prompts is not empty
    return total / count


def patch_o_vector(
    model,
    tokenizer,
    vector: Tensor,
    layers: Sequence[int],
    items: Sequence[dict],
    mode: str = "add",
    batch_size: int = 16,
    exact: bool = True,
) -> dict:
    """Score `items` with `vector` added to (mode "add") or written over ("replace") the FFN output at the last
    position of the chosen layers; returns score_relation's dict."""
    if mode not in ("add", "replace"):
        raise NeuronlabError(f"mode must be 'add' or 'replace', not {mode!r}")
    kind = Add if mode == "add" else Set
    plan = Plan([kind(value=vector, site="ffn_out", layers=list(layers), positions="last")])
    with apply(model, plan):
        return score_relation(model, tokenizer, items, batch_size, exact)


def ablate_from(
    model,
    tokenizer,
    items: Sequence[dict],
    layers: Sequence[int] | None = None,
    mean: bool = False,
    batch_size: int = 16,
    exact: bool = True,
) -> dict[int, dict]:
    """For each start layer l: the relation score with every FFN output from layer l on set to zero, or with
    `mean=True` to its mean over all tokens of the items' prompts (mean-ablation)."""
    from neuronlab.record.recorder import record

    n = len(decoder_layers(model))
    means: dict[int, Tensor] = {}
    if mean:
        stats = record(
            model,
            tokenizer,
            {"items": [i["prompt"] for i in items]},
            site="ffn_out",
            progress=False,
            count_special=True,
        )
        means = {layer: stats.mean[0, layer].float() for layer in range(n)}
    out = {}
    for start in layers if layers is not None else range(n):
        chosen = list(range(start, n))
        plan = Plan(
            [Set(value={i: means[i] for i in chosen}, site="ffn_out", layers=chosen)]
            if mean
            else [Zero(site="ffn_out", layers=chosen)]
        )
        with apply(model, plan):
            out[start] = score_relation(model, tokenizer, items, batch_size, exact)
    return out


def save_vector(path: str | Path, vector: Tensor, meta: dict) -> None:
    """An o-vector in safetensors with its provenance (model, layer, prompts) as JSON metadata."""
    write_safetensors(path, {"vector": vector.detach().float().cpu()}, VECTOR_FORMAT, meta=json.dumps(meta))


def load_vector(path: str | Path) -> tuple[Tensor, dict]:
    tensors, header = read_safetensors(path, VECTOR_FORMAT, "vector")
    return tensors["vector"], json.loads(header["meta"])


def _vector_summary(loaded: tuple[Tensor, dict]) -> str:
    vector, meta = loaded
    model = meta.get("model", {}).get("name_or_path") or "?"
    return (
        f"vector of {vector.numel()} values, norm {float(vector.norm()):.4f}: {meta.get('site', '?')} of layer "
        f"{meta.get('layer', '?')} on {model}, mean over {meta.get('prompts', '?')} prompts "
        f"({meta.get('pairs', '')})"
    )


register_artifact("vector", [VECTOR_FORMAT], load_vector, _vector_summary)
