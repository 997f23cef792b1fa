"""The `neuronlab` command. Every subcommand mirrors one Python function and has --help.

    neuronlab record --model M --text en=en.txt --text fr=fr.txt --out stats.safetensors
    neuronlab record --model M --text-dir flores/ --pattern '*.devtest' --out stats.safetensors --resume
    neuronlab inspect stats.safetensors
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated

import typer

from neuronlab.errors import NeuronlabError
from neuronlab.io import write_bytes

app = typer.Typer(help="Find, steer and tune the neurons of transformer language models.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)  # fmt: skip


def _friendly(fn):
    """Print a NeuronlabError as one line and exit 2, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NeuronlabError as err:
            typer.secho(f"error: {err}", fg="red", err=True)
            raise typer.Exit(2) from None

    return wrapper


ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Hugging Face hub id or local folder.")]
DtypeOpt = Annotated[str | None, typer.Option(help="float32, float16 or bfloat16 (default: the checkpoint's).")]
DeviceOpt = Annotated[str | None, typer.Option(help="Device such as cuda:0; 'auto' spreads a large model.")]
RevisionOpt = Annotated[str | None, typer.Option(help="Branch, tag or commit, e.g. Pythia's step1000.")]


def _load(model: str, dtype: str | None, device: str | None, revision: str | None):
    from neuronlab.models.load import load_model

    if device == "auto":
        return load_model(model, dtype=dtype, device_map="auto", revision=revision)
    return load_model(model, dtype=dtype, device=device, revision=revision)


def _texts(text: list[str] | None, text_dir: Path | None, pattern: str, limit: int | None = None) -> dict[str, list[str]]:
    """{group: lines} from --text GROUP=FILE pairs and/or a --text-dir, each cut to its first `limit` lines."""
    from neuronlab.data.corpora import parse_group_files, read_text_dir

    texts = parse_group_files(text or [])
    if text_dir is not None:
        for group, lines in read_text_dir(text_dir, pattern).items():
            if group in texts:
                raise NeuronlabError(f"group {group!r} is given twice")
            texts[group] = lines
    if not texts:
        raise NeuronlabError("no texts: pass --text GROUP=FILE (repeatable) or --text-dir DIR")
    return texts if limit is None else {g: lines[:limit] for g, lines in texts.items()}


@app.command()
@_friendly
def record(
    model: ModelOpt,
    out: Annotated[Path, typer.Option(help="Stats file to write (safetensors).")],
    text: Annotated[list[str] | None, typer.Option(help="GROUP=FILE, one text per line; repeat per group.")] = None,
    text_dir: Annotated[Path | None, typer.Option(help="Folder of GROUP.txt files (see --pattern).")] = None,
    pattern: Annotated[str, typer.Option(help="File pattern in --text-dir; FLORES: '*.devtest'.")] = "*.txt",
    limit: Annotated[int | None, typer.Option(help="Use only the first N lines of each file.")] = None,
    site: Annotated[str, typer.Option(help="Site kind: act, neuron, ffn_out, attn_out or resid.")] = "act",
    batch_size: Annotated[int, typer.Option(help="Rows per forward pass.")] = 8,
    max_length: Annotated[int, typer.Option(help="Tokens per window; longer texts are split.")] = 512,
    truncate: Annotated[bool, typer.Option(help="Cut texts at --max-length instead of splitting them.")] = False,
    max_tokens: Annotated[int | None, typer.Option(help="Count at most this many tokens per group.")] = None,
    pooled_texts: Annotated[int, typer.Option(help="Keep per-text mean/max for the first N texts per group.")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue from --out if it exists, never counting a text twice.")] = False,
    checkpoint_every: Annotated[float, typer.Option(help="Seconds between checkpoints to --out.")] = 600.0,
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    revision: RevisionOpt = None,
) -> None:
    """Record per-neuron statistics of a site over texts grouped by language or concept."""
    from neuronlab.record.recorder import record as record_stats

    if out.exists() and not resume:
        raise NeuronlabError(f"{out} exists: pass --resume to continue it, or choose another --out")
    texts = _texts(text, text_dir, pattern, limit)
    loaded, tokenizer = _load(model, dtype, device, revision)
    stats = record_stats(
        loaded, tokenizer, texts, site=site, batch_size=batch_size, max_length=max_length, truncate=truncate,
        max_tokens=max_tokens, pooled_texts=pooled_texts, checkpoint=out, checkpoint_every=checkpoint_every,
    )  # fmt: skip
    typer.echo(stats.summary())
    typer.echo(f"wrote {out}")


@app.command()
@_friendly
def inspect(path: Annotated[Path, typer.Argument(help="A stats or learned-intervention (.safetensors), neuron-set "
                                                     "or plan (.json) file.")]) -> None:  # fmt: skip
    """Summarise a stats, learned-intervention, neuron-set or plan file."""
    from neuronlab.intervene.plan import Plan
    from neuronlab.record.stats import Stats
    from neuronlab.select.neuron_set import NeuronSet

    if not path.is_file():
        raise NeuronlabError(f"no file at {path}")
    if path.stat().st_size == 0:
        raise NeuronlabError(f"{path} is empty")
    if path.suffix == ".safetensors":
        from neuronlab.io import safetensors_format
        from neuronlab.learn.scalars import FORMAT, Scaling

        typer.echo((Scaling.load(path) if safetensors_format(path) == FORMAT else Stats.load(path)).summary())
        return
    try:
        fmt = json.loads(path.read_text(encoding="utf-8")).get("format", "")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise NeuronlabError(f"{path} is neither a stats file (.safetensors) nor neuronlab JSON") from err
    if fmt.startswith("neuronlab.neuron_set"):
        typer.echo(NeuronSet.load(path).summary())
    elif fmt.startswith("neuronlab.plan"):
        plan = Plan.load(path)
        typer.echo(f"plan with {len(plan)} interventions")
        for iv in plan:
            typer.echo(f"  {type(iv).__name__} on {iv.site}, layers {iv.layers or 'all'}, positions {iv.positions}")
    else:
        raise NeuronlabError(f"{path} is JSON but not a neuronlab file (format {fmt!r})")


find_app = typer.Typer(help="Select neurons from recorded statistics.", no_args_is_help=True)
eval_app = typer.Typer(help="Measure a model, optionally with a target language's neurons steered.",
                       no_args_is_help=True)  # fmt: skip
app.add_typer(find_app, name="find")
app.add_typer(eval_app, name="eval")

StatsOpt = Annotated[Path, typer.Option("--stats", help="Stats file from `neuronlab record`.")]
OutOpt = Annotated[Path, typer.Option("--out", help="File to write.")]
NeuronsOpt = Annotated[Path | None, typer.Option("--neurons", help="Neuron set (JSON) to steer with.")]
TargetOpt = Annotated[list[str] | None, typer.Option("--target", help="Language(s) whose neurons to steer "
                                                     "(default: every language of --neurons).")]  # fmt: skip
VariantOpt = Annotated[str, typer.Option(help="p_max, p_median, zero, scale, p10, layer_max or add_layer_max.")]
FactorOpt = Annotated[float, typer.Option(help="Factor for --variant scale.")]
SteerStatsOpt = Annotated[Path | None, typer.Option("--stats", help="Stats with pooled texts (p_max, p_median).")]
TextOpt = Annotated[list[str] | None, typer.Option("--text", help="GROUP=FILE, one text per line; repeatable.")]
TextDirOpt = Annotated[Path | None, typer.Option(help="Folder of GROUP.txt files (see --pattern).")]
PatternOpt = Annotated[str, typer.Option(help="File pattern in --text-dir; FLORES: '*.devtest'.")]


@find_app.command("lape")
@_friendly
def find_lape(
    stats: StatsOpt,
    out: OutOpt,
    top_rate: Annotated[float, typer.Option(help="Share of all neurons kept (Tang et al.: 0.01 for 7B models).")] = 0.01,
    filter_rate: Annotated[float, typer.Option(help="Quantile a neuron's top probability must exceed.")] = 0.95,
    activation_bar_ratio: Annotated[float, typer.Option(help="Quantile that assigns a neuron to a language.")] = 0.95,
) -> None:
    """Language-specific neurons by activation-probability entropy (LAPE)."""
    from neuronlab.record.stats import Stats
    from neuronlab.select.lape import lape

    ns = lape(Stats.load(stats), top_rate, filter_rate, activation_bar_ratio)
    ns.save(out)
    typer.echo(ns.summary())
    typer.echo(f"wrote {out}")


@find_app.command("activated")
@_friendly
def find_activated(
    stats: StatsOpt,
    out: OutOpt,
    n_texts: Annotated[int, typer.Option(help="A neuron must be active (mean > 0) on each of this many texts.")] = 100,
) -> None:
    """Baseline: neurons active on every one of a language's first texts (needs --pooled-texts when recording)."""
    from neuronlab.record.stats import Stats
    from neuronlab.select.lape import activated

    ns = activated(Stats.load(stats), n_texts)
    ns.save(out)
    typer.echo(ns.summary())
    typer.echo(f"wrote {out}")


def _steering(model, neurons: Path | None, targets: list[str] | None, variant: str, factor: float,
              stats: Path | None):  # fmt: skip
    """(targets, plan_for) from the steering options, checked against `model`; ([], None) without --neurons."""
    from neuronlab.intervene.steer import steering_plan
    from neuronlab.record.stats import Stats
    from neuronlab.select.neuron_set import NeuronSet

    if neurons is None:
        if targets:
            raise NeuronlabError("--target needs --neurons")
        return [], None
    ns = NeuronSet.load(neurons)
    ns.validate(model)
    loaded = Stats.load(stats) if stats is not None else None
    if loaded is not None:
        loaded.check_model(model)
    chosen = targets or ns.groups
    for t in chosen:
        ns[t]  # a clear error for a target the set does not have
    return chosen, lambda t: steering_plan(ns, t, variant, stats=loaded, factor=factor)


@eval_app.command("perplexity")
@_friendly
def eval_perplexity(
    model: ModelOpt,
    text: TextOpt = None,
    text_dir: TextDirOpt = None,
    pattern: PatternOpt = "*.txt",
    neurons: NeuronsOpt = None,
    target: TargetOpt = None,
    variant: VariantOpt = "zero",
    factor: FactorOpt = 2.0,
    stats: SteerStatsOpt = None,
    batch_size: Annotated[int, typer.Option(help="Rows per forward pass.")] = 8,
    max_length: Annotated[int, typer.Option(help="Tokens per window.")] = 512,
    out: Annotated[Path | None, typer.Option(help="Write the results as JSON.")] = None,
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    revision: RevisionOpt = None,
) -> None:
    """Perplexity per language; with --neurons, the matrix "steer T's neurons -> perplexity on L"."""
    from neuronlab.evaluate.perplexity import perplexity
    from neuronlab.evaluate.steering import perplexity_matrix
    from neuronlab.io import write_json

    texts = _texts(text, text_dir, pattern)
    loaded, tok = _load(model, dtype, device, revision)
    targets, plan_for = _steering(loaded, neurons, target, variant, factor, stats)
    if plan_for is None:
        result = {"baseline": {g: perplexity(loaded, tok, lines, batch_size, max_length) for g, lines in texts.items()}}
    else:
        result = perplexity_matrix(loaded, tok, texts, targets, plan_for, batch_size, max_length)
    for g, v in result["baseline"].items():
        typer.echo(f"{g}: perplexity {v:.3f}")
    for t, row in result.get("change", {}).items():
        typer.echo(f"steer {t} ({variant}): " + "  ".join(f"{g} {c:+.1%}" for g, c in row.items()))
    if out is not None:
        write_json(out, result)


@eval_app.command("lss")
@_friendly
def eval_lss(
    model: ModelOpt,
    neurons: Annotated[Path, typer.Option("--neurons", help="Neuron set (JSON) to steer with.")],
    items: Annotated[Path | None, typer.Option(help="JSONL items {lang, prompt, objects}.")] = None,
    text_dir: Annotated[Path | None, typer.Option(help="Or build items from aligned lines of GROUP files.")] = None,
    pattern: PatternOpt = "*.txt",
    n_items: Annotated[int, typer.Option(help="Items per language when building from --text-dir.")] = 20,
    target: TargetOpt = None,
    variant: VariantOpt = "p_max",
    factor: FactorOpt = 2.0,
    stats: SteerStatsOpt = None,
    out: Annotated[Path | None, typer.Option(help="Write the results as JSON.")] = None,
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    revision: RevisionOpt = None,
) -> None:
    """Language Steering Shift: share of items pushed toward the target language."""
    from neuronlab.data.tasks import lss_items_from_texts, read_lss_items
    from neuronlab.evaluate.steering import lss_matrix
    from neuronlab.io import write_json

    if (items is None) == (text_dir is None):
        raise NeuronlabError("pass either --items FILE or --text-dir DIR")
    loaded_items = read_lss_items(items) if items else lss_items_from_texts(_texts(None, text_dir, pattern), n_items)
    loaded, tok = _load(model, dtype, device, revision)
    targets, plan_for = _steering(loaded, neurons, target, variant, factor, stats)
    result = lss_matrix(loaded, tok, loaded_items, targets, plan_for)
    for t, v in result["off_diagonal"].items():
        typer.echo(f"LSS(. -> {t}) = {v:.3f}")
    if out is not None:
        write_json(out, result)


@eval_app.command("generate")
@_friendly
def eval_generate(
    model: ModelOpt,
    prompt: Annotated[list[str], typer.Option(help="A prompt to continue; repeatable.")],
    neurons: NeuronsOpt = None,
    target: TargetOpt = None,
    variant: VariantOpt = "p_max",
    factor: FactorOpt = 2.0,
    stats: SteerStatsOpt = None,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate.")] = 32,
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    revision: RevisionOpt = None,
) -> None:
    """Greedy generations, plain and with each target's neurons steered."""
    from neuronlab.evaluate.steering import generate
    from neuronlab.intervene.apply import apply

    loaded, tok = _load(model, dtype, device, revision)
    targets, plan_for = _steering(loaded, neurons, target, variant, factor, stats)
    for p, text in zip(prompt, generate(loaded, tok, prompt, max_new_tokens)):
        typer.echo(f"[plain] {p}{text}")
    for t in targets:
        with apply(loaded, plan_for(t)):
            for p, text in zip(prompt, generate(loaded, tok, prompt, max_new_tokens)):
                typer.echo(f"[{t}] {p}{text}")


@eval_app.command("translate")
@_friendly
def eval_translate(
    model: ModelOpt,
    src: Annotated[Path, typer.Option(help="Source sentences, one a line (e.g. eng_Latn.devtest).")],
    ref: Annotated[Path, typer.Option(help="Reference translations, line-aligned with --src.")],
    src_name: Annotated[str, typer.Option(help="Source language name in the prompt.")] = "English",
    tgt_name: Annotated[str, typer.Option(help="Target language name in the prompt.")] = "French",
    shots: Annotated[int, typer.Option(help="In-context examples, taken from the first lines.")] = 2,
    start: Annotated[int, typer.Option(help="First evaluated line (after the shots).")] = 100,
    n: Annotated[int, typer.Option(help="Lines to translate.")] = 50,
    neurons: NeuronsOpt = None,
    target: TargetOpt = None,
    variant: VariantOpt = "p_max",
    factor: FactorOpt = 2.0,
    stats: SteerStatsOpt = None,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate per sentence.")] = 96,
    out: Annotated[Path | None, typer.Option(help="Write scores and hypotheses as JSON.")] = None,
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    revision: RevisionOpt = None,
) -> None:
    """BLEU and chrF of few-shot greedy translation, plain and with the target's neurons steered."""
    from neuronlab.data.corpora import read_lines
    from neuronlab.evaluate.translation import score, translate
    from neuronlab.intervene.apply import apply
    from neuronlab.io import write_json

    raw_src, raw_ref = read_lines(src, keep_blank=True), read_lines(ref, keep_blank=True)
    if len(raw_src) != len(raw_ref):
        raise NeuronlabError(f"{src} and {ref} have different numbers of lines: they must be line-aligned")
    pairs = [(a, b) for a, b in zip(raw_src, raw_ref) if a and b]  # drop a line pair if either side is blank
    s_lines, r_lines = [a for a, _ in pairs], [b for _, b in pairs]
    sources, refs = s_lines[start : start + n], r_lines[start : start + n]
    if not sources:
        raise NeuronlabError(f"no lines from {start}: the files have {len(s_lines)}")
    examples = list(zip(s_lines[:shots], r_lines[:shots]))
    loaded, tok = _load(model, dtype, device, revision)
    targets, plan_for = _steering(loaded, neurons, target, variant, factor, stats)
    run = lambda: translate(loaded, tok, sources, examples, src_name, tgt_name, max_new_tokens)  # noqa: E731
    hyps = {"plain": run()}
    for t in targets:
        with apply(loaded, plan_for(t)):
            hyps[t] = run()
    result = {k: {**score(h, refs), "hypotheses": h} for k, h in hyps.items()}
    for k, r in result.items():
        typer.echo(f"{k}: BLEU {r['bleu']:.2f}  chrF {r['chrf']:.2f}")
    if out is not None:
        write_json(out, result)


@app.command()
@_friendly
def report(
    results: Annotated[Path, typer.Argument(help="results.json written by `neuronlab demo`.")],
    out: Annotated[Path | None, typer.Option(help="HTML file (default: report.html beside the results).")] = None,
) -> None:
    """Render the HTML report again from a results.json."""
    from neuronlab.demo.pipeline import read_results, write_report

    if not results.is_file():
        raise NeuronlabError(f"no results file at {results}")
    data = read_results(results)
    target = out or results.with_name("report.html")
    write_report(data, target)
    typer.echo(f"wrote {target}")


@app.command()
@_friendly
def demo(
    out: Annotated[Path, typer.Option(help="Folder for report.html and the artifacts.")] = Path("neuronlab-demo"),
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model (default: the embedded demo model).")] = None,
    data: Annotated[Path | None, typer.Option(help="Folder of GROUP files (default: the embedded demo data).")] = None,
    pattern: PatternOpt = "*.txt",
    record_lines: Annotated[int, typer.Option(help="Lines per language for the statistics.")] = 250,
    eval_lines: Annotated[int, typer.Option(help="Held-out lines per language for evaluation.")] = 100,
    top_rate: Annotated[float, typer.Option(help="LAPE share of neurons kept (demo: 0.15; 7B models: 0.01).")] = 0.15,
    batch_size: Annotated[int, typer.Option(help="Rows per forward pass.")] = 16,
    factor: Annotated[list[float] | None, typer.Option(help="Scale factors to sweep; repeatable.")] = None,
    max_ppl_increase: Annotated[float, typer.Option(help="Sweep: bound on the off-target perplexity rise "
                                                          "(1 = +100%).")] = 1.0,  # fmt: skip
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    revision: RevisionOpt = None,
) -> None:
    """Run the whole language-neuron pipeline and write DIR/report.html (offline on the embedded model)."""
    from neuronlab.data.corpora import read_text_dir
    from neuronlab.demo.pipeline import DEMO_DATA, DEMO_MODEL, PipelineConfig, run

    texts = read_text_dir(data or DEMO_DATA, pattern if data else "*.txt")
    loaded, tok = _load(model or str(DEMO_MODEL), dtype, device, revision)
    cfg = PipelineConfig(record_lines=record_lines, eval_lines=eval_lines, top_rate=top_rate, batch_size=batch_size,
                         max_ppl_increase=max_ppl_increase, **({"factors": tuple(factor)} if factor else {}))  # fmt: skip
    results = run(loaded, tok, texts, out, cfg, log=typer.echo)
    for k, v in results["checks"].items():
        typer.echo(f"{k}: {v}")


@app.command()
@_friendly
def lens(
    model: ModelOpt,
    prompt: Annotated[list[str], typer.Option(help="Prompt to decode at its last position; repeatable.")],
    target: Annotated[list[str] | None, typer.Option(help="Expected next text, one per prompt (rank shown).")] = None,
    k: Annotated[int, typer.Option(help="Top tokens shown per layer.")] = 3,
    site: Annotated[str, typer.Option(help="resid (the stream after each layer), ffn_out or attn_out.")] = "resid",
    out: Annotated[Path | None, typer.Option(help="Write the full result as JSON.")] = None,
    plot: Annotated[Path | None, typer.Option(help="PNG of the target's rank across layers.")] = None,
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    revision: RevisionOpt = None,
) -> None:
    """Logit lens: decode each layer's residual stream (or block output) through the final norm and unembedding."""
    from neuronlab.analyze.lens import logit_lens
    from neuronlab.io import write_json

    loaded, tok = _load(model, dtype, device, revision)
    result = logit_lens(loaded, tok, prompt, target, k=k, site=site)
    for row, p in enumerate(prompt):
        typer.echo(f"{p!r}" + (f" -> {target[row]!r}" if target else ""))
        for layer, entry in result["layers"].items():
            top = "  ".join(f"{t!r} {pr:.3f}" for t, pr in entry["top"][row])
            rank = f"  target rank {entry['target_rank'][row]} p={entry['target_prob'][row]:.3f}" if target else ""
            typer.echo(f"  layer {layer:>3}: {top}{rank}")
    if out is not None:
        write_json(out, result)
    if plot is not None:
        if not target:
            raise NeuronlabError("--plot shows the target's rank: pass --target")
        from neuronlab.report.plots import lines

        layers = list(result["layers"])
        series = {f"{p!r} -> {t!r}": [result["layers"][layer]["target_rank"][row] for layer in layers]
                  for row, (p, t) in enumerate(zip(prompt, target))}  # fmt: skip
        write_bytes(plot, lines(series, layers, "layer", "target rank (0 = top-1)", "logit lens", log_y=True))


arith_app = typer.Typer(help="FFN outputs as additive vectors: extract, patch, ablate (Merullo et al. 2024).",
                        no_args_is_help=True)  # fmt: skip
app.add_typer(arith_app, name="arith")
PairsOpt = Annotated[Path, typer.Option(help="Pairs: CSV (first two columns, header) or JSON [{input, output}].")]
TemplateOpt = Annotated[str, typer.Option(help="Prompt template with {x} and a final {y}.")]
ShotsOpt = Annotated[int, typer.Option(help="In-context examples per prompt.")]
LimitOpt = Annotated[int | None, typer.Option(help="Use only the first N pairs.")]


def _relation(pairs: Path, template: str, shots: int, limit: int | None) -> list[dict]:
    from neuronlab.analyze.arithmetic import read_pairs, relation_items

    items = relation_items(read_pairs(pairs), template, shots)
    return items if limit is None else items[:limit]


def _show(label: str, score: dict) -> None:
    typer.echo(f"{label}: accuracy {score['accuracy']:.3f}  exact {score['exact']:.3f}  "
               f"reciprocal rank {score['reciprocal_rank']:.3f}  multi-token targets {score['multi_token']:.0%}")


@arith_app.command("extract")
@_friendly
def arith_extract(
    model: ModelOpt,
    pairs: PairsOpt,
    layer: Annotated[int, typer.Option(help="Layer whose FFN output to take (last position).")],
    out: Annotated[Path, typer.Option(help="Vector file to write (safetensors).")],
    template: TemplateOpt = "{x}: {y}",
    shots: ShotsOpt = 2,
    limit: LimitOpt = None,
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    revision: RevisionOpt = None,
) -> None:
    """Mean FFN output at the last position of the relation prompts: the relation's o-vector."""
    from neuronlab.analyze.arithmetic import extract_o_vector, save_vector, score_relation
    from neuronlab.models.load import model_info

    items = _relation(pairs, template, shots, limit)
    loaded, tok = _load(model, dtype, device, revision)
    _show("task", score_relation(loaded, tok, items))
    vector = extract_o_vector(loaded, tok, [i["prompt"] for i in items], layer)
    save_vector(out, vector, {"model": model_info(loaded), "layer": layer, "site": "ffn_out", "pairs": str(pairs),
                              "template": template, "shots": shots, "prompts": len(items)})  # fmt: skip
    typer.echo(f"o-vector of layer {layer}: norm {vector.norm():.3f}; wrote {out}")


@arith_app.command("patch")
@_friendly
def arith_patch(
    model: ModelOpt,
    vector: Annotated[Path, typer.Option(help="Vector file from `neuronlab arith extract`.")],
    pairs: PairsOpt,
    layer: Annotated[list[int], typer.Option(help="Layer(s) whose FFN output gets the vector; repeatable.")],
    nonsense: Annotated[str, typer.Option(help="Words before each input, so only the vector can carry "
                                                "the relation.")] = "table mug free",  # fmt: skip
    mode: Annotated[str, typer.Option(help="add or replace.")] = "add",
    scale: Annotated[float, typer.Option(help="Multiply the vector by this.")] = 1.0,
    limit: LimitOpt = None,
    plot: Annotated[Path | None, typer.Option(help="PNG comparing plain and patched scores.")] = None,
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    revision: RevisionOpt = None,
) -> None:
    """Write an o-vector into other prompts ("table mug free Poland") and see if the target becomes top-1."""
    from neuronlab.analyze.arithmetic import load_vector, patch_o_vector, read_pairs, score_relation
    from neuronlab.models.load import model_info, same_model

    vec, meta = load_vector(vector)
    found = read_pairs(pairs)[:limit] if limit else read_pairs(pairs)
    items = [{"prompt": f"{nonsense} {x}", "target": f" {y}"} for x, y in found]
    loaded, tok = _load(model, dtype, device, revision)
    differs = same_model(meta.get("model", {}), model_info(loaded))
    if differs:
        raise NeuronlabError(f"the vector was extracted from another model ({differs})")
    plain = score_relation(loaded, tok, items)
    patched = patch_o_vector(loaded, tok, vec * scale, layer, items, mode)
    _show("plain", plain)
    _show(f"{mode} x{scale} at layers {layer}", patched)
    if plot is not None:
        from neuronlab.report.plots import lines

        keys = ["accuracy", "exact", "reciprocal_rank"]
        series = {"plain": [plain[k] for k in keys], f"{mode} x{scale}, layers {layer}": [patched[k] for k in keys]}
        write_bytes(plot, lines(series, keys, "score", "value", f"o-vector patched into '{nonsense} X'"))


@arith_app.command("ablate")
@_friendly
def arith_ablate(
    model: ModelOpt,
    pairs: PairsOpt,
    template: TemplateOpt = "{x}: {y}",
    shots: ShotsOpt = 2,
    limit: LimitOpt = None,
    mean: Annotated[bool, typer.Option(help="Mean-ablate (set to the mean FFN output) instead of zeroing.")] = False,
    plot: Annotated[Path | None, typer.Option(help="PNG of accuracy against the first ablated layer.")] = None,
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    revision: RevisionOpt = None,
) -> None:
    """Task accuracy with every FFN output from layer l on set to zero (or its mean), for each l."""
    from neuronlab.analyze.arithmetic import ablate_from, score_relation

    items = _relation(pairs, template, shots, limit)
    loaded, tok = _load(model, dtype, device, revision)
    _show("plain", score_relation(loaded, tok, items))
    scores = ablate_from(loaded, tok, items, mean=mean)
    for start, score in scores.items():
        _show(f"FFN outputs {'mean-ablated' if mean else 'zeroed'} from layer {start}", score)
    if plot is not None:
        from neuronlab.report.plots import lines

        series = {k: [s[k] for s in scores.values()] for k in ("accuracy", "reciprocal_rank")}
        write_bytes(plot, lines(series, list(scores), "first ablated layer", "score", "FFN outputs ablated from l on"))


scale_app = typer.Typer(help="Learned interventions: activation scalars, steering vectors, dynamic scalars "
                             "(Stoehr et al. 2024).", no_args_is_help=True)  # fmt: skip
app.add_typer(scale_app, name="scale")
ScalingOpt = Annotated[Path, typer.Option("--scaling", help="Folder from `scale train` (or its .safetensors file).")]


def _scaling_file(path: Path) -> Path:
    return path / "scaling.safetensors" if path.is_dir() else path


def _metrics_line(label: str, m: dict) -> None:
    flip = "n/a" if m["flip_rate"] is None else f"{m['flip_rate']:.3f}"
    typer.echo(f"{label} ({m['items']} items): flip rate {flip}  target>foil {m['accuracy_before']:.3f} -> "
               f"{m['success']:.3f}  logit diff {m['logit_diff_before']:+.2f} -> {m['logit_diff_after']:+.2f}  "
               f"KL on other tokens {m['kl']:.3f}  parameters {m['parameters']}  L1 {m['l1']:.2f}  "
               f"moved >{m['epsilon']}: {m['moved']}")  # fmt: skip


def _plot_scaling(learned, path: Path) -> None:
    from neuronlab.report.plots import panels

    grids, cols, rows, center = learned.grids()
    what = {"activscalar": "alpha", "steervec": "|v|", "dynscalar": "b and |w|"}[learned.method]
    png = panels(grids, cols, rows, f"{learned.method}: {what} per layer and position (from the end)", center)
    write_bytes(path, png)


@scale_app.command("task")
@_friendly
def scale_task(
    kind: Annotated[str, typer.Argument(help="pronoun, ioi or capital.")],
    out: Annotated[Path, typer.Option(help="JSONL file to write.")],
    swap: Annotated[bool, typer.Option(help="Exchange target and foil (the usual flipping task).")] = False,
) -> None:
    """Write a templated task: one {prompt, target, foil, group} per line."""
    from neuronlab.data.contrast import BUILDERS, write_contrast

    if kind not in BUILDERS:
        raise NeuronlabError(f"unknown task {kind!r}: use one of {', '.join(BUILDERS)}")
    items = BUILDERS[kind](swap=swap)
    write_contrast(out, items)
    typer.echo(f"wrote {len(items)} items to {out}")


@scale_app.command("train")
@_friendly
def scale_train(
    model: ModelOpt,
    task: Annotated[Path, typer.Option(help="JSONL items {prompt, target, foil[, group]}.")],
    out: Annotated[Path, typer.Option(help="Folder for scaling.safetensors, plan.json, metrics.json, scalars.png.")],
    method: Annotated[str, typer.Option(help="activscalar, steervec or dynscalar.")] = "activscalar",
    components: Annotated[str, typer.Option(help="Comma-separated: attn_out, ffn_out, resid.")] = "attn_out,ffn_out,resid",
    layers: Annotated[list[int] | None, typer.Option(help="Layer(s) to intervene on; repeatable (default all).")] = None,
    positions: Annotated[int | None, typer.Option(help="Last N prompt positions (default: the longest prompt).")] = None,
    effectiveness: Annotated[float, typer.Option(help="Weight of softplus(-(logit target - logit foil)).")] = 5.0,
    faithfulness: Annotated[float, typer.Option(help="Weight of the KL on the other tokens.")] = 1.0,
    minimality: Annotated[float, typer.Option(help="Weight of the L1 on alpha - 1 (or v, or w and b - 1).")] = 0.03,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 0.05,
    epochs: Annotated[int, typer.Option(help="At most this many passes over the training items.")] = 200,
    patience: Annotated[int, typer.Option(help="Stop after this many epochs without a better validation loss.")] = 20,
    holdout: Annotated[float, typer.Option(help="Share of groups held out for the reported metrics.")] = 0.25,
    seed: Annotated[int, typer.Option(help="Seed of the split and the batch order.")] = 0,
    drop_ambiguous: Annotated[bool, typer.Option(help="Drop items whose target and foil start with the same "
                                                      "token (instead of stopping with an error).")] = False,  # fmt: skip
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    revision: RevisionOpt = None,
) -> None:
    """Learn an intervention that makes each target beat its foil; report it on held-out groups."""
    from neuronlab.data.contrast import distinguishable, read_contrast, split
    from neuronlab.io import write_json
    from neuronlab.learn.scalars import ScalingConfig, evaluate_scaling, train_scaling

    cfg = ScalingConfig(method=method, components=tuple(c.strip() for c in components.split(",") if c.strip()),
                        layers=tuple(layers) if layers else None, positions=positions, effectiveness=effectiveness,
                        faithfulness=faithfulness, minimality=minimality, lr=lr, epochs=epochs, patience=patience,
                        seed=seed)  # fmt: skip
    items = read_contrast(task)
    loaded, tok = _load(model, dtype, device, revision)
    if drop_ambiguous:
        items, dropped = distinguishable(items, tok)
        typer.echo(f"dropped {dropped} items whose target and foil start with the same token; {len(items)} left")
    train_items, held_out = split(items, holdout, seed)
    learned = train_scaling(loaded, tok, train_items, cfg)
    learned.meta.update(task=str(task), held_out_groups=sorted({i["group"] for i in held_out}))
    metrics = {"train": evaluate_scaling(loaded, tok, learned, train_items),
               "held_out": evaluate_scaling(loaded, tok, learned, held_out),
               "epochs": len(learned.meta["history"])}  # fmt: skip
    learned.save(out / "scaling.safetensors")
    learned.to_plan().save(out / "plan.json")
    write_json(out / "metrics.json", metrics)
    _plot_scaling(learned, out / "scalars.png")
    _metrics_line("train", metrics["train"])
    _metrics_line("held out", metrics["held_out"])
    typer.echo(f"{metrics['epochs']} epochs; wrote {out}/scaling.safetensors, plan.json, metrics.json, scalars.png")


@scale_app.command("eval")
@_friendly
def scale_eval(
    model: ModelOpt,
    task: Annotated[Path, typer.Option(help="JSONL items {prompt, target, foil}.")],
    scaling: ScalingOpt,
    out: Annotated[Path | None, typer.Option(help="Write the metrics here (JSON).")] = None,
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    revision: RevisionOpt = None,
) -> None:
    """Flip rate, logit-difference change, KL on other tokens and minimality of a learned intervention."""
    from neuronlab.data.contrast import read_contrast
    from neuronlab.io import write_json
    from neuronlab.learn.scalars import Scaling, evaluate_scaling

    learned = Scaling.load(_scaling_file(scaling))
    items = read_contrast(task)
    loaded, tok = _load(model, dtype, device, revision)
    metrics = evaluate_scaling(loaded, tok, learned, items)
    _metrics_line(str(task), metrics)
    if out is not None:
        write_json(out, metrics)


@scale_app.command("show")
@_friendly
def scale_show(
    scaling: Annotated[Path, typer.Argument(help="Folder from `scale train` (or its .safetensors file).")],
    top: Annotated[int, typer.Option(help="List this many of the parameters that moved most.")] = 10,
    plot: Annotated[Path | None, typer.Option(help="PNG heatmap of the learned values.")] = None,
) -> None:
    """Summarise a learned intervention: size, L1, what moved most; optionally a heatmap."""
    from neuronlab.learn.scalars import Scaling

    learned = Scaling.load(_scaling_file(scaling))
    typer.echo(learned.summary(top))
    if plot is not None:
        _plot_scaling(learned, plot)
        typer.echo(f"wrote {plot}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
