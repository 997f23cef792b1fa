"""SLAM (Fan et al. 2025) from files, as the commands run it: choose the layers from a stats file (`neuronlab
layers`), fine-tune only their FFNs on a JSONL file (`neuronlab finetune`), write the delta into a plain
checkpoint (`neuronlab merge`). Each checks where it writes and reads its inputs before it loads the model (a
(model, tokenizer) pair, or a function that loads one).

    sel = nl.run_layers("stats.safetensors", "layers.json", k=6, plot="layers.png")
    delta = nl.run_finetune(lambda: nl.load_model("M"), "layers.json", "train.jsonl", "run/", max_steps=200)
    delta = nl.run_merge(lambda: nl.load_model("M"), "run/", "merged/")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from neuronlab.errors import NeuronlabError
from neuronlab.io import atomic_folder, check_writable, write_bytes
from neuronlab.learn.finetune import Delta, FinetuneConfig, finetune, merge, read_sft
from neuronlab.models.load import ModelSource, loaded
from neuronlab.models.sites import decoder_layers
from neuronlab.record.stats import Stats
from neuronlab.select.layers import LayerConfig, LayerSelection, parse_layers, select_layers


def run_layers(
    stats: str | Path,
    out: str | Path,
    config: LayerConfig | None = None,
    plot: str | Path | None = None,
    **settings: Any,
) -> LayerSelection:
    """sel = run_layers("stats.safetensors", "layers.json", LayerConfig(k=6), plot="layers.png")

    `neuronlab layers`: `select_layers` on a stats file, saved to `out`; with `plot`, the per-language scores
    drawn there (when the selection has them: `sel.per_language`)."""
    from neuronlab.report.plots import layer_scores

    check_writable(out, plot)
    sel = select_layers(Stats.load(stats), config, **settings)
    sel.save(out)
    if plot is not None and sel.per_language:
        write_bytes(plot, layer_scores(sel))
    return sel


def run_finetune(
    model: ModelSource,
    layers: str | Path,
    data: str | Path,
    out: str | Path,
    config: FinetuneConfig | None = None,
    resume: bool = True,
    **settings: Any,
) -> Delta:
    """delta = run_finetune((model, tok), "layers.json", "train.jsonl", "run/", max_steps=200)

    `neuronlab finetune`: `finetune` the FFNs of `layers` (a layers.json, checked against the model, a range
    "0-5" or a list "1,3,5") on the items of `data`; the Delta is saved in `out` and returned."""
    check_writable(out, folder=True)
    items = read_sft(data)
    loaded_model, tok = loaded(model)
    chosen, selection = parse_layers(layers, len(decoder_layers(loaded_model)))
    if selection is not None:
        selection.check_model(loaded_model)
    return finetune(loaded_model, tok, items, chosen, config, out, resume=resume, **settings)


def run_merge(model: ModelSource, delta: str | Path, out: str | Path) -> Delta:
    """delta = run_merge(lambda: nl.load_model("M"), "run/", "merged/")

    `neuronlab merge`: the base model with the delta (its folder or file) written in, saved with its tokenizer
    as a plain Hugging Face checkpoint in `out`, whole or not at all (an earlier checkpoint there is replaced; a
    folder holding other files is refused). Returns the delta."""
    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise NeuronlabError(f"{out} holds files but no checkpoint (config.json): choose a new or empty folder")
    check_writable(out, folder=True)
    loaded_delta = Delta.load(delta)
    loaded_model, tok = loaded(model)
    merged = merge(loaded_model, loaded_delta)
    atomic_folder(out, lambda tmp: (merged.save_pretrained(tmp), tok.save_pretrained(tmp)))  # whole, or as it was
    return loaded_delta
