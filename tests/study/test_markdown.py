"""A study's results as Markdown, and pages whose study sections are generated from stored results: the command
that reruns it (settings that differ from the preset as --set), every claim with each model's verdict, and a check
that names a section whose numbers differ from its results."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from neuronlab.errors import NeuronlabError
from neuronlab.io import read_json
from neuronlab.study import study_page
from neuronlab.study.markdown import command, markdown

STORED = Path(__file__).resolve().parents[2] / "docs" / "results" / "arithmetic.json"


@pytest.fixture
def results():
    return read_json(STORED, "study results")


def test_the_command_reruns_the_study_with_the_settings_that_differ(results):
    assert command(results).split(" \\\n    ") == [
        "neuronlab study arithmetic",
        *(f"--model {m}" for m in results["models"]),
        "--out runs/arithmetic",
        "--size docs",
        f"--dtype {results['dtype']}",
    ]
    results["config"]["pairs"] = 7
    results["config"]["relations"] = ["capital", "past_tense"]
    assert command(results).endswith("--set relations=capital,past_tense \\\n    --set pairs=7")  # field order


def test_markdown_holds_every_claim_and_each_models_verdict(results):
    text = markdown(results)
    for claim in results["claims"]:
        assert claim["claim"] in text and claim["rule"] in text
        for m, verdict in claim["verdicts"].items():
            assert f"**{verdict}**" in text and m in text


def test_a_page_is_rewritten_from_its_results_and_checked(tmp_path, results):
    shutil.copy(STORED, tmp_path / "arithmetic.json")
    page = tmp_path / "page.md"
    page.write_text("# Title\n\nprose stays\n\n<!-- study: arithmetic -->\nold text\n<!-- end study -->\n\nend\n")
    with pytest.raises(NeuronlabError, match="sections arithmetic differ"):
        study_page(page, tmp_path, check=True)
    assert study_page(page, tmp_path) and not study_page(page, tmp_path, check=True)
    text = page.read_text()
    assert text.startswith("# Title\n\nprose stays\n\n") and text.endswith("<!-- end study -->\n\nend\n")
    assert markdown(results) in text
    page.write_text(text.replace(f"{results['claims'][0]['values'][next(iter(results['models']))]:.3g}", "0.999", 1))
    with pytest.raises(NeuronlabError, match="arithmetic"):
        study_page(page, tmp_path, check=True)
    page.write_text("<!-- study: slam -->\n<!-- end study -->\n")
    with pytest.raises(NeuronlabError, match="no study results file"):
        study_page(page, tmp_path)
    page.write_text("no sections\n")
    with pytest.raises(NeuronlabError, match="no '<!-- study: NAME -->'"):
        study_page(page, tmp_path)
