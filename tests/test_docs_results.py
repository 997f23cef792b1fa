"""docs/real-models.md's study sections are what the stored docs runs give (docs/results/<study>.json, each a
study's results.json): every number on the page is its stored one, and every stored verdict is what today's code
computes from the stored figures (a changed claim rule shows here, not silently on the page)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from neuronlab.io import read_json
from neuronlab.study import STUDIES, study_page

DOCS = Path(__file__).resolve().parents[1] / "docs"
RESULTS = DOCS / "results"


def test_the_page_is_what_the_stored_results_give():
    assert not study_page(DOCS / "real-models.md", RESULTS, check=True)


def _plain(value):
    """JSON's view of a value, NaN as None (so NaN == NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@pytest.mark.slow  # the claims' figures are drawn again
@pytest.mark.parametrize("name", list(STUDIES))
def test_every_study_has_stored_results_whose_verdicts_todays_code_gives(name):
    results = read_json(RESULTS / f"{name}.json", "study results", ("neuronlab.study/1",))
    assert results["study"] == name and results["size"] == "docs"
    assert list(results["models"]) == ["gemma-3-270m", "smollm2-135m-instruct"]
    kind = STUDIES[name]
    claims = kind.claims(
        {m: r["figures"] for m, r in results["models"].items()}, kind.config.from_dict(results["config"])
    )
    assert _plain(json.loads(json.dumps([c.to_dict() for c in claims]))) == _plain(results["claims"])
