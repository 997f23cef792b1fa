"""The command line on a tiny model saved to a folder (the same loading path as a hub id)."""

import json

import pytest
import torch
from typer.testing import CliRunner

import neuronlab as nl
from neuronlab.cli import app

from .conftest import TEXTS, load_ref, save_tiny

runner = CliRunner()


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for g, lines in TEXTS.items():
        (folder / f"{g}.txt").write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    return folder


def _commands():
    """Every command path of the app, walked from typer's own registry."""
    import typer.main

    def walk(group, path):
        for name, cmd in group.commands.items():
            yield from walk(cmd, [*path, name]) if hasattr(cmd, "commands") else [[*path, name]]

    return list(walk(typer.main.get_command(app), []))


def test_every_subcommand_has_help():
    found = _commands()
    assert len(found) >= 18 and ["scale", "train"] in found and ["arith", "ablate"] in found
    for cmd in [[], *found]:
        result = runner.invoke(app, [*cmd, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, cmd


@pytest.mark.parametrize(
    "command, config, function",
    [
        (["record"], "neuronlab.record.recorder:RecordConfig", "neuronlab.record.recorder:record"),
        (["find", "lape"], "neuronlab.select.lape:LapeConfig", "neuronlab.select.lape:lape"),
        (
            ["find", "attribution"],
            "neuronlab.select.attribution:AttributionConfig",
            "neuronlab.select.attribution:attribute",
        ),
        (["layers"], "neuronlab.select.layers:LayerConfig", "neuronlab.select.layers:select_layers"),
        (["finetune"], "neuronlab.learn.finetune:FinetuneConfig", "neuronlab.learn.finetune:finetune"),
        (["scale", "train"], "neuronlab.learn.scalars:ScalingConfig", "neuronlab.learn.scalars:train_scaling"),
        (["demo"], "neuronlab.demo.pipeline:PipelineConfig", "neuronlab.demo.pipeline:run"),
        (
            ["experts", "find"],
            "neuronlab.analyze.find_experts:FindExpertsConfig",
            "neuronlab.analyze.find_experts:find_experts",
        ),
    ],
)
def test_every_config_field_has_a_cli_option_with_its_help_and_default(command, config, function):
    import dataclasses
    import inspect

    import typer.main

    from neuronlab.cli.common import option_name

    cls, fn = load_ref(config), load_ref(function)
    cmd = typer.main.get_command(app)
    for part in command:
        cmd = cmd.commands[part]
    options = {opt: p for p in cmd.params for opt in p.opts}
    for f in dataclasses.fields(cls):
        name = f"{cls.__name__}.{f.name}"
        assert "help" in f.metadata, f"{name} has no help text"
        assert option_name(f) in options, f"{name} has no option on `neuronlab {' '.join(command)}`"
        opt = options[option_name(f)]
        assert f.metadata["help"] in opt.help
        if isinstance(f.default, tuple):  # a repeatable option: the default is shown in the help
            assert opt.default is None and (not f.default or ",".join(map(str, f.default)) in opt.help), name
        else:
            assert opt.default == f.default, f"{name}: the option's default {opt.default!r} is not {f.default!r}"
    # one convention: the library function takes the config object as `config`, or its fields as keywords
    params = inspect.signature(fn, eval_str=True).parameters
    assert "config" in params and cls in getattr(params["config"].annotation, "__args__", ()), fn
    assert params["config"].default is None, fn
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()), fn


def test_config_options_reach_the_config(model_dir, tmp_path):
    from neuronlab.cli.common import config_options
    from neuronlab.learn.scalars import ScalingConfig

    seen = {}

    @config_options(ScalingConfig)
    def fake(cfg: ScalingConfig) -> None:
        seen["cfg"] = cfg

    import typer

    tiny = typer.Typer()
    tiny.command()(fake)
    result = runner.invoke(
        tiny,
        [
            "--batch-size",
            "4",
            "--val-fraction",
            "0.1",
            "--components",
            "attn_out,resid",
            "--layers",
            "1",
            "--layers",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert seen["cfg"] == ScalingConfig(batch_size=4, val_fraction=0.1, components=("attn_out", "resid"), layers=(1, 2))


def test_record_then_inspect(model_dir, corpus, tmp_path):
    out = tmp_path / "stats.safetensors"
    args = [
        "record",
        "--model",
        str(model_dir),
        "--text",
        f"en={corpus / 'en.txt'}",
        "--text",
        f"fr={corpus / 'fr.txt'}",
        "--out",
        str(out),
        "--batch-size",
        "2",
        "--pooled-texts",
        "2",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    stats = nl.Stats.load(out)
    model, tok = nl.load_model(model_dir)
    expected = nl.record(model, tok, TEXTS, batch_size=2, pooled_texts=2, progress=False)
    assert stats.tokens.tolist() == expected.tokens.tolist()
    assert (stats.active == expected.active).all()
    stats.check_model(model)

    result = runner.invoke(app, ["inspect", str(out)])
    assert result.exit_code == 0 and "en:" in result.output and "2 pooled texts" in result.output

    again = runner.invoke(app, args)  # refuses to overwrite; --resume continues (here: nothing left)
    assert again.exit_code == 2 and "--resume" in again.output
    resumed = runner.invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert nl.Stats.load(out).tokens.tolist() == expected.tokens.tolist()

    from_dir = tmp_path / "dir.safetensors"
    result = runner.invoke(app, ["record", "-m", str(model_dir), "--text-dir", str(corpus), "--out", str(from_dir)])
    assert result.exit_code == 0 and nl.Stats.load(from_dir).groups == ["en", "fr"]


def test_inspect_neuron_sets_and_plans(tmp_path):
    nl.NeuronSet({"fr": {1: [2, 3]}}, meta={"method": "lape", "site": "act"}).save(tmp_path / "n.json")
    result = runner.invoke(app, ["inspect", str(tmp_path / "n.json")])
    assert result.exit_code == 0 and "fr: 2 neurons" in result.output
    nl.Plan([nl.Scale(factor=2.0)]).save(tmp_path / "p.json")
    result = runner.invoke(app, ["inspect", str(tmp_path / "p.json")])
    assert result.exit_code == 0 and "Scale on act" in result.output


@pytest.mark.parametrize(
    "make_args, message",
    [
        (
            lambda d, t: ["record", "-m", str(d), "--text", f"en={t / 'empty.txt'}", "--out", str(t / "o")],
            "has no text",
        ),
        (lambda d, t: ["record", "-m", str(d), "--text", "en", "--out", str(t / "o")], "GROUP=FILE"),
        (lambda d, t: ["record", "-m", str(d), "--out", str(t / "o")], "no texts"),
        (
            lambda d, t: ["record", "-m", str(t / "nowhere"), "--text", f"en={t / 'a.txt'}", "--out", str(t / "o")],
            "cannot load model",
        ),
        (lambda d, t: ["inspect", str(t / "empty.txt")], "is empty"),
        (lambda d, t: ["inspect", str(t / "a.txt")], "neither a stats file"),
    ],
)
def test_errors_are_one_clear_line(model_dir, tmp_path, make_args, message):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "a.txt").write_text("some text\n")
    result = runner.invoke(app, make_args(model_dir, tmp_path))
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_device_auto_is_refused_under_a_launcher(model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it; refused before joining any group
    (tmp_path / "a.txt").write_text("some text\n")
    args = ["record", "-m", str(model_dir), "--device", "auto", "--text", f"en={tmp_path / 'a.txt'}", "--out", "o"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "use --device cuda under torchrun" in result.output


def test_find_and_eval_commands(model_dir, corpus, tmp_path):
    stats = tmp_path / "s.safetensors"
    assert (
        runner.invoke(
            app, ["record", "-m", str(model_dir), "--text-dir", str(corpus), "--out", str(stats), "--pooled-texts", "3"]
        ).exit_code
        == 0
    )
    neurons = tmp_path / "n.json"
    result = runner.invoke(
        app,
        [
            "find",
            "lape",
            "--stats",
            str(stats),
            "--out",
            str(neurons),
            "--top-rate",
            "0.2",
            "--filter-rate",
            "0.5",
            "--activation-bar-ratio",
            "0.5",
        ],
    )
    assert result.exit_code == 0, result.output
    ns = nl.NeuronSet.load(neurons)
    assert ns.meta["method"] == "lape" and ns.total() > 0
    result = runner.invoke(
        app, ["find", "activated", "--stats", str(stats), "--out", str(tmp_path / "a.json"), "--n-texts", "3"]
    )
    assert result.exit_code == 0 and nl.NeuronSet.load(tmp_path / "a.json").meta["n_texts"] == 3

    out = tmp_path / "ppl.json"
    result = runner.invoke(
        app,
        [
            "eval",
            "perplexity",
            "-m",
            str(model_dir),
            "--text-dir",
            str(corpus),
            "--neurons",
            str(neurons),
            "--variant",
            "zero",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    model, tok = nl.load_model(model_dir)
    ppl = json.loads(out.read_text())
    assert ppl["baseline"]["en"] == pytest.approx(nl.perplexity(model, tok, TEXTS["en"]))

    result = runner.invoke(
        app,
        [
            "eval",
            "lss",
            "-m",
            str(model_dir),
            "--text-dir",
            str(corpus),
            "--neurons",
            str(neurons),
            "--stats",
            str(stats),
            "--n-items",
            "2",
        ],
    )
    assert result.exit_code == 0 and "LSS(. -> " in result.output, result.output

    result = runner.invoke(
        app,
        [
            "eval",
            "generate",
            "-m",
            str(model_dir),
            "--prompt",
            "the cat",
            "--neurons",
            str(neurons),
            "--target",
            ns.groups[0],
            "--variant",
            "scale",
            "--factor",
            "3",
            "--max-new-tokens",
            "5",
        ],
    )
    assert result.exit_code == 0 and "[plain] the cat" in result.output and f"[{ns.groups[0]}] the cat" in result.output

    src, ref = tmp_path / "src.txt", tmp_path / "ref.txt"
    src.write_text("a b\nthe cat\nhi there\nhello\n")
    ref.write_text("a b\nle chat\nsalut\nbonjour\n")
    out = tmp_path / "mt.json"
    result = runner.invoke(
        app,
        [
            "eval",
            "translate",
            "-m",
            str(model_dir),
            "--src",
            str(src),
            "--ref",
            str(ref),
            "--shots",
            "2",
            "--start",
            "2",
            "--n",
            "2",
            "--max-new-tokens",
            "6",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    mt = json.loads(out.read_text())
    from neuronlab.evaluate.translation import score

    assert mt["plain"]["bleu"] == score(mt["plain"]["hypotheses"], ["salut", "bonjour"])["bleu"]
    assert score(["le chat est là"], ["le chat est là"])["bleu"] == pytest.approx(100.0)

    result = runner.invoke(app, ["eval", "lss", "-m", str(model_dir), "--neurons", str(neurons)])
    assert result.exit_code == 2 and "--items" in result.output
    result = runner.invoke(
        app,
        [
            "eval",
            "translate",
            "-m",
            str(model_dir),
            "--src",
            str(src),
            "--ref",
            str(ref),
            "--start",
            "2",
            "--max-new-tokens",
            "200",
        ],
    )
    assert result.exit_code == 2 and "positions" in result.output
    result = runner.invoke(
        app, ["eval", "generate", "-m", str(model_dir), "--prompt", "x", "--neurons", str(neurons), "--target", "xx"]
    )
    assert result.exit_code == 2 and "group 'xx' is not in this neuron set" in result.output


def test_lens_command(model_dir, tmp_path):
    out = tmp_path / "lens.json"
    result = runner.invoke(
        app, ["lens", "-m", str(model_dir), "--prompt", "the cat", "--target", " sat", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "layer   2:" in result.output and "target rank" in result.output
    assert len(json.loads(out.read_text())["layers"]) == 3
    bad = runner.invoke(app, ["lens", "-m", str(model_dir), "--prompt", "a", "--prompt", "b", "--target", "x"])
    assert bad.exit_code == 2 and "one target per prompt" in bad.output


def test_slam_commands_layers_finetune_merge(model_dir, corpus, tmp_path):
    import torch
    import transformers

    stats = tmp_path / "s.safetensors"
    assert (
        runner.invoke(app, ["record", "-m", str(model_dir), "--text-dir", str(corpus), "--out", str(stats)]).exit_code
        == 0
    )
    layers = tmp_path / "layers.json"
    result = runner.invoke(
        app,
        [
            "layers",
            "--stats",
            str(stats),
            "--k",
            "2",
            "--threshold",
            "0.3",
            "--out",
            str(layers),
            "--plot",
            str(tmp_path / "layers.png"),
        ],
    )
    assert result.exit_code == 0 and "layer selection (msd, k=2)" in result.output, result.output
    assert len(nl.LayerSelection.load(layers).layers) == 2 and (tmp_path / "layers.png").is_file()
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{a}+{a}", "response": str(2 * a)}) + "\n" for a in range(8)))
    run = tmp_path / "run"
    args = [
        "finetune",
        "-m",
        str(model_dir),
        "--layers",
        str(layers),
        "--data",
        str(data),
        "--out",
        str(run),
        "--max-steps",
        "2",
        "--batch-size",
        "4",
        "--lr",
        "0.01",
        "--template",
        "{query}=",
        "--save-steps",
        "1",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and "trained values" in result.output, result.output
    first = nl.Delta.load(run)
    assert first.meta["steps"] == 2 and first.meta["layers"] == nl.LayerSelection.load(layers).layers
    result = runner.invoke(app, [*args[:9], "--max-steps", "3", *args[11:]])  # resumes from the Trainer's checkpoint-2
    assert result.exit_code == 0 and nl.Delta.load(run).meta["steps"] == 3, result.output
    merged = tmp_path / "merged"
    result = runner.invoke(app, ["merge", "-m", str(model_dir), "--delta", str(run), "--out", str(merged)])
    assert result.exit_code == 0, result.output
    model = transformers.AutoModelForCausalLM.from_pretrained(merged)
    base, _ = nl.load_model(model_dir)
    nl.Delta.load(run).apply(base)
    ids = torch.tensor([[1, 5, 6, 7]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, base(ids).logits)
    again = runner.invoke(app, ["merge", "-m", str(merged), "--delta", str(run), "--out", str(tmp_path / "m2")])
    assert again.exit_code == 2 and "made on another model" in again.output
    other = save_tiny(tmp_path / "other", "gpt2", seed=3)
    bad = runner.invoke(
        app,
        [
            "finetune",
            "-m",
            str(other),
            "--layers",
            str(layers),
            "--data",
            str(data),
            "--out",
            str(tmp_path / "r2"),
            "--max-steps",
            "1",
        ],
    )
    assert bad.exit_code == 2 and "this layer selection: made on another model" in bad.output
    bad = runner.invoke(
        app,
        [
            "finetune",
            "-m",
            str(model_dir),
            "--layers",
            "0-7",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "r3"),
            "--max-steps",
            "1",
        ],
    )
    assert bad.exit_code == 2 and "out of range" in bad.output
    assert "delta of" in runner.invoke(app, ["inspect", str(run / "delta.safetensors")]).output


def test_record_streams_a_datasets_source(model_dir, tmp_path):
    """--dataset GROUP=FILE reads a column with `datasets` (streamed) and records what the lines record."""
    pytest.importorskip("datasets", reason="the `datasets` package is not importable here (pip install datasets)")
    rows = [json.dumps({"id": i, "body": t}) for i, t in enumerate(TEXTS["en"])]
    (tmp_path / "en.jsonl").write_text("\n".join(rows) + "\n")
    (tmp_path / "fr.csv").write_text("body\n" + "".join(f'"{t}"\n' for t in TEXTS["fr"]))
    out = tmp_path / "s.safetensors"
    result = runner.invoke(
        app,
        [
            "record",
            "-m",
            str(model_dir),
            "--dataset",
            f"en={tmp_path / 'en.jsonl'}",
            "--dataset",
            f"fr={tmp_path / 'fr.csv'}",
            "--column",
            "body",
            "--limit",
            "3",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    model, tok = nl.load_model(model_dir)
    expected = nl.record(model, tok, {g: t[:3] for g, t in TEXTS.items()}, progress=False)
    got = nl.Stats.load(out)
    assert got.groups == ["en", "fr"] and got.tokens.tolist() == expected.tokens.tolist()
    assert got.texts.tolist() == [3, 3] and torch.allclose(got.sum, expected.sum)

    wrong = runner.invoke(
        app,
        [
            "record",
            "-m",
            str(model_dir),
            "--dataset",
            f"en={tmp_path / 'en.jsonl'}",
            "--out",
            str(tmp_path / "w.safetensors"),
        ],
    )
    assert wrong.exit_code == 2 and "no column 'text'" in wrong.output and "id, body" in wrong.output


def test_tuple_options_take_commas_repeats_and_none():
    from neuronlab.cli.common import _as_tuple

    assert _as_tuple(["2,4", "8"], (1.0,), float) == (2.0, 4.0, 8.0)
    assert _as_tuple(None, (1.0,), float) == (1.0,)
    assert _as_tuple(["none"], (1.0,), float) == ()
    with pytest.raises(nl.NeuronlabError, match="--factor: x are not all float"):
        _as_tuple(["x"], (), float, "--factor")


def test_config_switches_turn_off_and_tuples_take_none():
    """A bool field that defaults to True has its --no- switch, and `--factor none` empties a tuple field."""
    import typer

    from neuronlab.cli.common import config_options
    from neuronlab.demo.pipeline import PipelineConfig

    seen = {}
    small = typer.Typer()

    @small.command()
    @config_options(PipelineConfig)
    def show(cfg: PipelineConfig) -> None:
        seen["cfg"] = cfg

    assert CliRunner().invoke(small, ["--no-amplify-perplexity", "--factor", "none"]).exit_code == 0
    assert seen["cfg"].amplify_perplexity is False and seen["cfg"].factors == ()
    assert CliRunner().invoke(small, ["--factor", "2,4"]).exit_code == 0
    assert seen["cfg"].amplify_perplexity is True and seen["cfg"].factors == (2.0, 4.0)


def test_models_commands_name_the_packaged_models_and_refuse_bad_input(tmp_path):
    runner = CliRunner()
    listed = runner.invoke(app, ["models", "list"])
    assert listed.exit_code == 0 and "gemma-3-270m" in listed.output and "smollm2-135m-instruct" in listed.output
    bad = runner.invoke(app, ["models", "path", "gpt-5"])
    assert bad.exit_code == 2 and "unknown packaged model 'gpt-5'" in bad.output
    missing = runner.invoke(app, ["models", "convert", str(tmp_path / "none.gguf"), "--out", str(tmp_path / "o")])
    assert missing.exit_code == 2 and "no GGUF file" in missing.output
    with pytest.raises(nl.NeuronlabError, match="no GGUF file"):
        nl.load_model(tmp_path / "none.gguf")
