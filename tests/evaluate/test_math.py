"""Multilingual math: the answer rule on hand-written outputs, the real MGSM/MSVAMP files, resume, the CLI."""

import json

import pytest
from typer.testing import CliRunner

import neuronlab as nl
from neuronlab.cli import app
from neuronlab.evaluate.math import evaluate_math, is_correct, language_of, math_prompt, read_math_dir

from ..conftest import SHARED, STORIES, char_tokenizer, needs_shared, tiny_model

MGSM, MSVAMP = SHARED / "data" / "mgsm", SHARED / "data" / "msvamp"


@pytest.mark.parametrize(
    "text, value",
    [
        ("The answer is 18.", 18.0),
        ("She pays $1,250.50 in total.", 1250.5),  # thousands separator removed
        ("3 apples and 4 pears make 7", 7.0),  # the last number wins
        ("It drops to -3 degrees", -3.0),  # a minus sign before digits belongs to the number
        ("5-3 = 2, so 10-2", -2.0),  # ... even as a hyphen: the reference rule
        ("Il reste 3,5 litres", 35.0),  # a decimal comma joins its digits, as in the reference
        ("no number here", None),
        ("", None),
        ("1,000,000 people", 1000000.0),
        ("0.5 of 12 is 6.0", 6.0),
    ],
)
def test_extract_answer_by_hand(text, value):
    assert nl.extract_answer(text) == value


def test_correct_within_tolerance():
    assert is_correct(18.0004, 18) and not is_correct(18.01, 18) and not is_correct(None, 18)


@needs_shared(MGSM)
def test_real_files_read_with_languages_from_the_names():
    mgsm, msvamp = read_math_dir(MGSM), read_math_dir(MSVAMP)
    assert sorted(mgsm) == ["de", "en", "es", "fr", "ja", "ru", "zh"] and all(len(v) == 250 for v in mgsm.values())
    assert sorted(msvamp) == sorted(mgsm) and all(len(v) == 1000 for v in msvamp.values())
    assert language_of(MSVAMP / "test_German.jsonl") == "de"
    first = mgsm["en"][0]
    assert first["question"].startswith("Janet") and first["answer"] == 18.0
    assert "in German. Please answer in German." in math_prompt("x", "mathoctopus", "de")


def test_bad_folders_and_files(tmp_path):
    with pytest.raises(nl.NeuronlabError, match=r"has no \.tsv"):
        read_math_dir(tmp_path)
    (tmp_path / "test_French.jsonl").write_text('{"query": "x"}\n')
    with pytest.raises(nl.NeuronlabError, match="needs the keys m_query and response"):
        read_math_dir(tmp_path)
    (tmp_path / "test_French.jsonl").write_text('{"m_query": "x", "response": "a lot"}\n')
    with pytest.raises(nl.NeuronlabError, match="not a number"):
        read_math_dir(tmp_path)


def test_interrupted_evaluation_resumes_without_asking_twice(tmp_path, monkeypatch):
    model, tok = tiny_model("gpt2"), char_tokenizer()
    data = {
        "en": [{"question": f"{a}+{a}", "answer": 2 * a} for a in range(5)],
        "de": [{"question": "1+1", "answer": 2}],
    }
    full = evaluate_math(
        model, tok, data, "{query}=", max_new_tokens=4, batch_size=2, out=tmp_path / "a", progress=False
    )
    path = tmp_path / "b" / "generations.jsonl"
    evaluate_math(model, tok, data, "{query}=", max_new_tokens=4, batch_size=2, out=tmp_path / "b", progress=False)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:3]) + "\n" + lines[3][:10])  # three answers kept, the fourth cut mid-line
    import neuronlab.evaluate.steering as steering

    asked = []
    real = steering.generate
    monkeypatch.setattr(
        steering, "generate", lambda m, t, prompts, *a, **k: asked.extend(prompts) or real(m, t, prompts, *a, **k)
    )
    again = evaluate_math(
        model, tok, data, "{query}=", max_new_tokens=4, batch_size=2, out=tmp_path / "b", progress=False
    )
    assert len(asked) == 3 and again["accuracy"] == full["accuracy"]
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted((r["lang"], r["index"]) for r in rows) == sorted(
        (lang, i) for lang in data for i in range(len(data[lang]))
    )
    with pytest.raises(nl.NeuronlabError, match="made another way"):
        evaluate_math(model, tok, data, "{query}?", max_new_tokens=4, out=tmp_path / "b", progress=False)


@needs_shared(STORIES)
@pytest.mark.parametrize("folder", [MGSM, MSVAMP])
def test_eval_math_cli_on_the_real_data_and_model(folder, tmp_path):
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "math",
            "-m",
            str(STORIES),
            "--data",
            str(folder),
            "--out",
            str(out),
            "--limit",
            "2",
            "--language",
            "en",
            "--language",
            "de",
            "--max-new-tokens",
            "12",
            "--prompt",
            "cot",
        ],
    )
    assert result.exit_code == 0, result.output
    res = json.loads((out / "results.json").read_text())
    assert set(res["accuracy"]) == {"en", "de"} and 0 <= res["average"] <= 1 and res["n"] == {"de": 2, "en": 2}
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["prediction"] == nl.extract_answer(r["output"]) for r in rows)
    assert (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    again = CliRunner().invoke(
        app,
        [
            "eval",
            "math",
            "-m",
            str(STORIES),
            "--data",
            str(folder),
            "--out",
            str(tmp_path / "b"),
            "--limit",
            "1",
            "--language",
            "en",
            "--max-new-tokens",
            "4",
            "--compare",
            f"before={out / 'results.json'}",
        ],
    )
    assert again.exit_code == 0 and "before" in again.output and "average" in again.output
    empty = CliRunner().invoke(app, ["eval", "math", "-m", str(STORIES), "--data", str(tmp_path), "--out", str(out)])
    assert empty.exit_code == 2 and "has no .tsv" in empty.output
