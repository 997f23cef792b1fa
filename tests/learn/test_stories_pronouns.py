"""The paper's claims on a real pretrained model (stories260K): learned scalars flip she/he on held-out names."""

from collections import Counter

import pytest

import neuronlab as nl
from neuronlab.data.contrast import pronoun_task, split
from neuronlab.learn.contrast_items import encode
from neuronlab.learn.methods import LearnedIntervention
from neuronlab.learn.scalars import ScalingConfig, evaluate_scaling, init_scaling, train_scaling

from ..conftest import STORIES, needs_shared

pytestmark = needs_shared(STORIES)

ADJECTIVES = ("little", "small", "happy", "kind", "nice", "good", "sweet", "funny")
OTHER_TEMPLATES = (  # 18-23 and 45-50 tokens, against 24 for training
    "There was a {kind} called {name}. Every day,",
    "Once upon a time, in a small house, there lived a little {kind}. The {kind}'s name was {name}. One sunny morning,",
)


@pytest.fixture(scope="module")
def stories():
    return nl.load_model(STORIES)


@pytest.fixture(scope="module")
def task():
    return split(pronoun_task(swap=True), holdout=0.25)


def test_the_model_prefers_she_after_girls_and_he_after_boys(stories):
    model, tok = stories
    identity = init_scaling(model, ScalingConfig(), 1)
    result = evaluate_scaling(model, tok, identity, pronoun_task())
    assert result["accuracy_before"] == 1.0 and result["logit_diff_before"] > 2.0
    assert result["logit_diff_change"] == 0.0 and result["kl"] == 0.0


@pytest.mark.slow  # 50 s of training on stories260K
@pytest.mark.toy
def test_activscalar_flips_held_out_names_with_fewer_parameters_than_steervec(stories, task):
    """The model is stored (stories260K); the methods train, so each claim is averaged over seeds of the method.

    Measured (torch 2.14.1, transformers 5.25, 2026-12-07), held-out flip rate / logit-difference change, seeds 0, 1, 2:
    ActivScalar (120 scalars) 1.00 / +9.2, 1.00 / +8.0, 1.00 / +8.4; the steering vector (7,680 values) 0.53 / +5.1,
    1.00 / +6.1, 1.00 / +5.6 (mean 0.84; seed 0 alone gave 0.80 on torch 2.13 and 0.53 on 2.14.1, which is why one
    seed is not a test). Asked: ActivScalar's mean over seeds 0-1 >= 0.9 (margin 0.1), the steering vector's mean
    over seeds 0-2 >= 0.6 (margin 0.24, about one seed's drop from 1.0 to 0.5) with a logit-difference change > 2.
    """
    model, tok = stories
    train, held_out = task
    sites = dict(positions=8)  # the name, ". One day," and the answer position

    def runs(method: str, seeds: tuple[int, ...]) -> list[dict]:
        return [
            evaluate_scaling(
                model,
                tok,
                train_scaling(model, tok, train, ScalingConfig(method=method, seed=seed, **sites), progress=False),
                held_out,
            )
            for seed in seeds
        ]

    scalar, vector = runs("activscalar", (0, 1)), runs("steervec", (0, 1, 2))
    mean = lambda rs, key: sum(r[key] for r in rs) / len(rs)  # noqa: E731
    print("activscalar", scalar, "\nsteervec", vector)
    a, v = scalar[0], vector[0]
    assert a["accuracy_before"] == 0.0 and mean(scalar, "flip_rate") >= 0.9  # held-out names flipped she <-> he
    assert a["parameters"] == 3 * 5 * 8 and v["parameters"] == 3 * 5 * 8 * 64
    assert all(r["moved"] < r["parameters"] for r in scalar)  # some scalars stay at 1
    assert mean(vector, "logit_diff_change") > 2.0 and mean(vector, "flip_rate") >= 0.6  # the baseline works too
    assert all(0 < r["kl"] < 5 for r in scalar + vector)


@pytest.mark.slow  # 14 s of training on stories260K
def test_dynscalar_trained_on_one_length_flips_other_lengths(stories, task):
    model, tok = stories
    train, held_out = split(
        pronoun_task(
            swap=True,
            templates=tuple(f"Once upon a time, there was a {a} {{kind}} named {{name}}. One day," for a in ADJECTIVES),
        ),
        0.25,
    )
    lengths = [len(ids) for ids in encode(tok, train).ids]
    length = Counter(lengths).most_common(1)[0][0]
    one_length = [item for item, n in zip(train, lengths, strict=True) if n == length]
    learned = train_scaling(model, tok, one_length, ScalingConfig(method="dynscalar", faithfulness=0.3), progress=False)
    names = {item["group"] for item in held_out}
    for template in OTHER_TEMPLATES:
        items = [i for i in pronoun_task(swap=True, templates=(template,)) if i["group"] in names]
        assert {len(ids) for ids in encode(tok, items).ids}.isdisjoint({length})
        result = evaluate_scaling(model, tok, learned, items)
        print(template, result)
        assert result["accuracy_before"] == 0.0 and result["flip_rate"] >= 0.9


def test_scale_commands(tmp_path):
    import json

    from typer.testing import CliRunner

    from neuronlab.cli import app

    runner = CliRunner()
    task_file, out = tmp_path / "pronoun.jsonl", tmp_path / "run"
    result = runner.invoke(app, ["scale", "task", "pronoun", "--swap", "--out", str(task_file)])
    assert result.exit_code == 0 and "wrote 60 items" in result.output
    result = runner.invoke(
        app,
        [
            "scale",
            "train",
            "--model",
            str(STORIES),
            "--task",
            str(task_file),
            "--out",
            str(out),
            "--positions",
            "8",
            "--epochs",
            "10",
            "--components",
            "attn_out,ffn_out,resid",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] <= 10 and metrics["held_out"]["parameters"] == 120
    assert "held out (15 items): flip rate" in result.output
    assert (out / "scalars.png").read_bytes()[:4] == b"\x89PNG" and nl.Plan.load(out / "plan.json")
    # `scale eval` on the held-out names reproduces the held-out metrics that `scale train` wrote
    held_names = set(LearnedIntervention.load(out / "learned.safetensors").meta["held_out_groups"])
    held = [json.loads(line) for line in task_file.read_text().splitlines() if json.loads(line)["group"] in held_names]
    (tmp_path / "held.jsonl").write_text("".join(json.dumps(i) + "\n" for i in held))
    result = runner.invoke(
        app,
        [
            "scale",
            "eval",
            "--model",
            str(STORIES),
            "--task",
            str(tmp_path / "held.jsonl"),
            "--scaling",
            str(out),
            "--out",
            str(tmp_path / "m.json"),
        ],
    )
    assert result.exit_code == 0 and "flip rate" in result.output
    assert json.loads((tmp_path / "m.json").read_text()) == metrics["held_out"]
    result = runner.invoke(app, ["scale", "show", str(out), "--plot", str(tmp_path / "s.png"), "--top", "3"])
    assert result.exit_code == 0 and "activscalar on" in result.output and result.output.count("alpha =") == 3
    result = runner.invoke(app, ["inspect", str(out / "learned.safetensors")])
    assert result.exit_code == 0 and "120 parameters" in result.output
    result = runner.invoke(
        app, ["scale", "train", "--model", str(STORIES), "--task", str(tmp_path / "none.jsonl"), "--out", str(out)]
    )
    assert result.exit_code == 2 and "no task file" in result.output
