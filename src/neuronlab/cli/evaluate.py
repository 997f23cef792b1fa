"""neuronlab eval perplexity | lss | generate | translate: measure a model, optionally with a target language's
neurons steered."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
    from neuronlab.evaluate.steering import steered_perplexity

    writable(out)
    found = texts(text, text_dir, pattern)
    loaded, tok = model.load()
    result = steered_perplexity(loaded, tok, found, steer.plans(loaded), batch_size, max_length, out)
    for g, v in result["baseline"].items():
        typer.echo(f"{g}: perplexity {v:.3f}")
    for t, row in result.get("change", {}).items():
        typer.echo(f"steer {t} ({steer.variant}): " + "  ".join(f"{g} {c:+.1%}" for g, c in row.items()))


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
    from neuronlab.evaluate.steering import steered_lss

    if (items is None) == (text_dir is None):
        raise NeuronlabError("pass either --items FILE or --text-dir DIR")
    writable(out)
    found = None if text_dir is None else texts(None, text_dir, pattern)
    loaded, tok = model.load()
    result = steered_lss(loaded, tok, steer.plans(loaded), items=items, texts=found, n_items=n_items, out=out)
    for t, v in result["off_diagonal"].items():
        typer.echo(f"LSS(. -> {t}) = {v:.3f}")


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
    from neuronlab.evaluate.steering import generate_under_plans

    loaded, tok = model.load()
    for label, outputs in generate_under_plans(loaded, tok, prompt, steer.plans(loaded), max_new_tokens).items():
        for p, text in zip(prompt, outputs, strict=True):
            typer.echo(f"[{label}] {p}{text}")


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
    from neuronlab.evaluate.translation import translate_files

    writable(out)
    loaded, tok = model.load()
    result = translate_files(
        loaded,
        tok,
        src,
        ref,
        steer.plans(loaded),
        src_name=src_name,
        tgt_name=tgt_name,
        shots=shots,
        start=start,
        n=n,
        max_new_tokens=max_new_tokens,
        out=out,
    )
    for k, r in result.items():
        typer.echo(f"{k}: BLEU {r['bleu']:.2f}  chrF {r['chrf']:.2f}")


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
    from neuronlab.evaluate.math import evaluate_math_dir

    writable(out, folder=True)
    loaded, tok = model.load()
    rows = evaluate_math_dir(
        loaded,
        tok,
        data,
        out,
        template=prompt,
        languages=language,
        limit=limit,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        compare=compare or [],
    )
    for row in rows:
        typer.echo(
            f"{row['language']:>8}: "
            + "  ".join(f"{k} {v:.3f}" if v is not None else f"{k} -" for k, v in row.items() if k != "language")
        )
    typer.echo(f"wrote {out}/results.json, generations.jsonl, accuracy.png")
