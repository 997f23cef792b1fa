"""`neuronlab study all --size smoke` on both packaged models, as CI's real step runs it: every study finishes on
both, each claim has a verdict for each model, the Markdown names every model and claim, and the index page and
the reports open in headless Chromium with no script error, showing every model and every claim."""

from __future__ import annotations

import pytest

import neuronlab as nl
from neuronlab.models import gguf
from neuronlab.study.base import FAILS, HOLDS, UNSURE
from neuronlab.study.markdown import markdown

from ..report.test_pages import CHROMIUM, opened, shown_as_text
from .conftest import NAMES

pytestmark = pytest.mark.real


def test_study_all_smoke_on_both_packaged_models(tmp_path, monkeypatch):
    pytest.importorskip("gguf", reason='the gguf package is not installed (pip install "neuronlab[gguf]")')
    missing = [n for n in NAMES if not gguf.installed(n)]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")
    monkeypatch.setenv("TQDM_DISABLE", "1")
    done = nl.study_all(NAMES, tmp_path, size="smoke", dtype="bfloat16", log=lambda *_: None)
    assert list(done) == list(nl.STUDIES)
    for name, results in done.items():
        assert list(results["models"]) == NAMES, name
        assert all(r["dtype"] == "bfloat16" and r["seconds"] for r in results["models"].values())
        assert results["claims"] and all(
            set(c["verdicts"]) == set(NAMES) and set(c["verdicts"].values()) <= {HOLDS, FAILS, UNSURE}
            for c in results["claims"]
        ), name
        text = markdown(results)
        assert all(m in text for m in NAMES) and all(c["claim"] in text for c in results["claims"])
    if CHROMIUM is None:
        pytest.skip("no Chromium here (apt-get install chromium); CI has it")
    index = opened((tmp_path / "index.html").as_uri())
    shown_as_text(index, [*NAMES, *(r["title"] for r in done.values())])
    for name in ("arithmetic", "experts"):
        page = opened((tmp_path / name / "report.html").as_uri())
        shown_as_text(page, [*NAMES, *(c["claim"] for c in done[name]["claims"])])
