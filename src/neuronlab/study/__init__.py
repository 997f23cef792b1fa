"""The five papers' studies as one call each: `nl.study(name, models, out, size=...)`, `nl.study_all(...)`.

Each module registers one study (`study/base.py` says what a study is); the runner (`study/runner.py`) loads every
model, measures, tests the paper's claims on all of them and writes results.json and report.html.
"""

from neuronlab.study import arithmetic, experts, language, scaling, slam
from neuronlab.study.base import STUDIES, Claim, Study, register_study
from neuronlab.study.markdown import markdown, study_page
from neuronlab.study.runner import render, study, study_all

__all__ = [
    "STUDIES",
    "Claim",
    "Study",
    "arithmetic",
    "experts",
    "language",
    "markdown",
    "register_study",
    "render",
    "scaling",
    "slam",
    "study",
    "study_all",
    "study_page",
]
