"""neuronlab eval perplexity | lss | generate | translate: measure a model, optionally with a target language's
neurons steered."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from neuronlab.cli.common import (
    BatchOpt,
    JsonOutOpt,
    MaxLengthOpt,
    ModelRef,
    PatternOpt,
    SteerRef,
    TextDirOpt,
    TextOpt,
    friendly,
    group,
    model_options,
    steering_options,
    texts,
    writable,
)
from neuronlab.errors import NeuronlabError

app = group("Measure a model, optionally with a target language's neurons steered.")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="eval")


def _save(out: Path | None, result) -> None:
    if out is not None:
        from neuronlab.io import write_json

        write_json(out, result)


@app.command("perplexity")
@friendly
@model_options()
@steering_options("zero")
def eval_perplexity(
    model: ModelRef,
    steer: SteerRef,
    text: TextOpt = None,
    text_dir: TextDirOpt = None,
    pattern: PatternOpt = "*.txt",
    batch_size: BatchOpt = 8,
    max_length: MaxLengthOpt = 512,
    out: JsonOutOpt = None,
) -> None:
    """Perplexity per language; with --neurons, the matrix "steer T's neurons -> perplexity on L"."""
    from neuronlab.evaluate.perplexity import perplexity
    from neuronlab.evaluate.steering import perplexity_matrix

    writable(out)
    found = texts(text, text_dir, pattern)
    loaded, tok = model.load()
    plans = steer.plans(loaded)
    result: dict[str, Any]
    if not plans:
        result = {"baseline": {g: perplexity(loaded, tok, lines, batch_size, max_length) for g, lines in found.items()}}
    else:
        result = perplexity_matrix(loaded, tok, found, list(plans), plans.__getitem__, batch_size, max_length)
    for g, v in result["baseline"].items():
        typer.echo(f"{g}: perplexity {v:.3f}")
    for t, row in result.get("change", {}).items():
        typer.echo(f"steer {t} ({steer.variant}): " + "  ".join(f"{g} {c:+.1%}" for g, c in row.items()))
    _save(out, result)


@app.command("lss")
@friendly
@model_options()
@steering_options(required=True)
def eval_lss(
    model: ModelRef,
    steer: SteerRef,
    items: Annotated[Path | None, typer.Option(help="JSONL items {lang, prompt, objects}.")] = None,
    text_dir: Annotated[Path | None, typer.Option(help="Or build items from aligned lines of GROUP files.")] = None,
    pattern: PatternOpt = "*.txt",
    n_items: Annotated[int, typer.Option(help="Items per language when building from --text-dir.")] = 20,
    out: JsonOutOpt = None,
) -> None:
    """Language Steering Shift: share of items pushed toward the target language."""
    from neuronlab.data.tasks import lss_items_from_texts, read_lss_items
    from neuronlab.evaluate.steering import lss_matrix

    if (items is None) == (text_dir is None):
        raise NeuronlabError("pass either --items FILE or --text-dir DIR")
    writable(out)
    loaded_items = read_lss_items(items) if items else lss_items_from_texts(texts(None, text_dir, pattern), n_items)
    loaded, tok = model.load()
    plans = steer.plans(loaded)
    result = lss_matrix(loaded, tok, loaded_items, list(plans), plans.__getitem__)
    for t, v in result["off_diagonal"].items():
        typer.echo(f"LSS(. -> {t}) = {v:.3f}")
    _save(out, result)


@app.command("generate")
@friendly
@model_options()
@steering_options()
def eval_generate(
    model: ModelRef,
    steer: SteerRef,
    prompt: Annotated[list[str], typer.Option(help="A prompt to continue; repeatable.")],
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate.")] = 32,
) -> None:
    """Greedy generations, plain and with each target's neurons steered."""
    from neuronlab.evaluate.steering import generate
    from neuronlab.intervene.apply import apply

    loaded, tok = model.load()
    plans = steer.plans(loaded)
    for p, text in zip(prompt, generate(loaded, tok, prompt, max_new_tokens), strict=True):
        typer.echo(f"[plain] {p}{text}")
    for t, plan in plans.items():
        with apply(loaded, plan):
            for p, text in zip(prompt, generate(loaded, tok, prompt, max_new_tokens), strict=True):
                typer.echo(f"[{t}] {p}{text}")


@app.command("translate")
@friendly
@model_options()
@steering_options()
def eval_translate(
    model: ModelRef,
    steer: SteerRef,
    src: Annotated[Path, typer.Option(help="Source sentences, one a line (e.g. eng_Latn.devtest).")],
    ref: Annotated[Path, typer.Option(help="Reference translations, line-aligned with --src.")],
    src_name: Annotated[str, typer.Option(help="Source language name in the prompt.")] = "English",
    tgt_name: Annotated[str, typer.Option(help="Target language name in the prompt.")] = "French",
    shots: Annotated[int, typer.Option(help="In-context examples, taken from the first lines.")] = 2,
    start: Annotated[int, typer.Option(help="First evaluated line (after the shots).")] = 100,
    n: Annotated[int, typer.Option(help="Lines to translate.")] = 50,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate per sentence.")] = 96,
    out: Annotated[Path | None, typer.Option(help="Write scores and hypotheses as JSON.")] = None,
) -> None:
    """BLEU and chrF of few-shot greedy translation, plain and with the target's neurons steered."""
    from neuronlab.data.corpora import read_parallel
    from neuronlab.evaluate.translation import translate_and_score

    writable(out)
    s_lines, r_lines = read_parallel(src, ref)
    if not s_lines[start : start + n]:
        raise NeuronlabError(f"no lines from {start}: the files have {len(s_lines)}")
    loaded, tok = model.load()
    plans = steer.plans(loaded)
    result = translate_and_score(
        loaded,
        tok,
        s_lines,
        r_lines,
        shots,
        start,
        n,
        src_name,
        tgt_name,
        max_new_tokens,
        plans,
    )
    for k, r in result.items():
        typer.echo(f"{k}: BLEU {r['bleu']:.2f}  chrF {r['chrf']:.2f}")
    _save(out, result)


@app.command("math")
@friendly
@model_options()
def eval_math(
    model: ModelRef,
    data: Annotated[Path, typer.Option(help="Folder of MGSM (.tsv) or MSVAMP (.jsonl) files, one language a file.")],
    out: Annotated[Path, typer.Option(help="Folder for results.json, generations.jsonl (resumable), accuracy.png.")],
    prompt: Annotated[
        str, typer.Option(help="qalign, mathoctopus, cot, or a template with {query} (and {language}).")
    ] = "qalign",
    language: Annotated[list[str] | None, typer.Option(help="Only these languages (codes: en, de, ...).")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N questions of each language.")] = None,
    max_new_tokens: Annotated[
        int | None,
        typer.Option(help="Tokens per answer (default: 600 for MGSM, 300 for MSVAMP, as the reference evaluations)."),
    ] = None,
    batch_size: BatchOpt = 8,
    compare: Annotated[
        list[str] | None,
        typer.Option(
            help="LABEL=results.json of another run (the base model, a baseline) for the table and plot; repeatable."
        ),
    ] = None,
) -> None:
    """Accuracy on multilingual math word problems: greedy answers, the last number, per language and average."""
    from neuronlab.data.corpora import label_pairs
    from neuronlab.evaluate.math import comparison, evaluate_math, read_math_dir
    from neuronlab.io import read_json, write_bytes
    from neuronlab.report.plots import accuracy_bars

    writable(out, folder=True)
    pairs = label_pairs(compare or [], "--compare", "results.json", "base=base-eval/results.json", label="LABEL")
    others = {label: read_json(path, "math results") for label, path in pairs.items()}
    found = read_math_dir(data, language, limit)
    loaded, tok = model.load()
    result = evaluate_math(loaded, tok, found, prompt, max_new_tokens, batch_size, out)
    runs = {**others, "this run": result}
    for row in comparison(runs):
        typer.echo(
            f"{row['language']:>8}: "
            + "  ".join(f"{k} {v:.3f}" if v is not None else f"{k} -" for k, v in row.items() if k != "language")
        )
    write_bytes(out / "accuracy.png", accuracy_bars(runs))
    typer.echo(f"wrote {out}/results.json, generations.jsonl, accuracy.png")
