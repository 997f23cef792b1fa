"""The analyze commands as library calls (`neuronlab lens`, `arith extract | patch | ablate`): each checks where it
writes, reads its inputs, loads the model only then, computes, writes its files and returns what the command shows.

    result = nl.run_lens((model, tok), ["The capital of Poland is"], [" Warsaw"], out="lens.json", plot="lens.png")
    task, vector = nl.run_arith_extract((model, tok), "capitals.csv", layer=12, out="capital.safetensors")
    found = nl.run_arith_patch(lambda: nl.load_model("M"), "capital.safetensors", "capitals.csv", layers=[12])
    plain, scores = nl.run_arith_ablate((model, tok), "capitals.csv", mean=True, plot="ablation.png")

`model` is a (model, tokenizer) pair, or a function that loads one (called after the cheap checks).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from neuronlab.analyze.arithmetic import (
    ablate_from,
    extract_o_vector,
    load_vector,
    patch_o_vector,
    read_pairs,
    relation_items,
    save_vector,
    score_relation,
)
from neuronlab.analyze.lens import logit_lens
from neuronlab.io import check_writable, write_bytes, write_json
from neuronlab.models.load import ModelSource, loaded, model_info, require_same_model


def run_lens(
    model: ModelSource,
    prompts: Sequence[str],
    targets: Sequence[str] | None = None,
    k: int = 3,
    site: str = "resid",
    out: str | Path | None = None,
    plot: str | Path | None = None,
) -> dict:
    """result = run_lens((model, tok), ["the cat"], [" sat"], k=3, out="lens.json")

    `neuronlab lens`: `logit_lens`'s result, also written as JSON to `out` and its target ranks drawn to `plot`."""
    from neuronlab.report.plots import lens_ranks

    check_writable(out, plot)
    loaded_model, tok = loaded(model)
    result = logit_lens(loaded_model, tok, prompts, targets, k=k, site=site)
    if out is not None:
        write_json(out, result)
    if plot is not None:
        write_bytes(plot, lens_ranks(result))
    return result


def _relation(pairs: str | Path, template: str, shots: int, limit: int | None) -> list[dict]:
    """The few-shot relation items of a pairs file, the first `limit` of them."""
    items = relation_items(read_pairs(pairs), template, shots)
    return items if limit is None else items[:limit]


def run_arith_extract(
    model: ModelSource,
    pairs: str | Path,
    layer: int,
    out: str | Path,
    template: str = "{x}: {y}",
    shots: int = 2,
    limit: int | None = None,
) -> tuple[dict, Tensor]:
    """task, vector = run_arith_extract((model, tok), "capitals.csv", layer=12, out="capital.safetensors")

    `neuronlab arith extract`: the relation's score (`score_relation`) and its o-vector at `layer` (the mean FFN
    output at the last position of its prompts), saved to `out` with its provenance."""
    check_writable(out)
    items = _relation(pairs, template, shots, limit)
    loaded_model, tok = loaded(model)
    task = score_relation(loaded_model, tok, items)
    vector = extract_o_vector(loaded_model, tok, [i["prompt"] for i in items], layer)
    meta = {
        "model": model_info(loaded_model),
        "layer": layer,
        "site": "ffn_out",
        "pairs": str(pairs),
        "template": template,
        "shots": shots,
        "prompts": len(items),
    }
    save_vector(out, vector, meta)
    return task, vector


def run_arith_patch(
    model: ModelSource,
    vector: str | Path,
    pairs: str | Path,
    layers: Sequence[int],
    nonsense: str = "table mug free",
    mode: str = "add",
    scale: float = 1.0,
    limit: int | None = None,
    plot: str | Path | None = None,
) -> dict:
    """found = run_arith_patch((model, tok), "capital.safetensors", "capitals.csv", layers=[12], plot="p.png")

    `neuronlab arith patch`: the pairs' inputs after `nonsense` words, scored plain and with the saved o-vector
    (times `scale`) added to (or written over) the FFN output of `layers`: {"plain", "patched", "label"}."""
    from neuronlab.report.plots import patching

    check_writable(plot)
    vec, meta = load_vector(vector)
    found = read_pairs(pairs)[:limit] if limit else read_pairs(pairs)
    items = [{"prompt": f"{nonsense} {x}", "target": f" {y}"} for x, y in found]
    loaded_model, tok = loaded(model)
    require_same_model(meta.get("model"), loaded_model, "the vector")
    plain = score_relation(loaded_model, tok, items)
    patched = patch_o_vector(loaded_model, tok, vec * scale, layers, items, mode)
    label = f"{mode} x{scale} at layers {layers}"
    if plot is not None:
        write_bytes(plot, patching(plain, patched, label, nonsense))
    return {"plain": plain, "patched": patched, "label": label}


def run_arith_ablate(
    model: ModelSource,
    pairs: str | Path,
    template: str = "{x}: {y}",
    shots: int = 2,
    limit: int | None = None,
    mean: bool = False,
    plot: str | Path | None = None,
) -> tuple[dict, dict[int, dict]]:
    """plain, scores = run_arith_ablate((model, tok), "capitals.csv", mean=True, plot="ablation.png")

    `neuronlab arith ablate`: the relation's plain score, and its score with every FFN output from layer l on
    zeroed (or set to its mean) for each l (`ablate_from`), drawn to `plot`."""
    from neuronlab.report.plots import ablation

    check_writable(plot)
    items = _relation(pairs, template, shots, limit)
    loaded_model, tok = loaded(model)
    plain = score_relation(loaded_model, tok, items)
    scores = ablate_from(loaded_model, tok, items, mean=mean)
    if plot is not None:
        write_bytes(plot, ablation(scores))
    return plain, scores
