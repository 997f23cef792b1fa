"""Running a paper's study on one or several models, and all five studies with an index page.

    nl.study("arithmetic", ["gemma-3-270m", "smollm2-135m-instruct"], "runs/arith", size="docs")
    nl.study_all(["gemma-3-270m"], "runs/all", size="smoke")     # runs/all/index.html links the five reports

Each model is a packaged name (`neuronlab models list`), a .gguf file, a folder or a hub id. The study writes
`results.json` (settings, seed, every model's identity, dtype, seconds per phase and figures, the claims with their
verdicts, library versions) after every model, so a killed run resumes from the models it finished (same settings),
and `report.html`. Files a study writes for one model go to a folder named after the model.
"""

from __future__ import annotations

import gc
import json
import platform
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from neuronlab.config import Config, configured, package_version, parse_settings
from neuronlab.io import check_writable, read_json, write_json
from neuronlab.models.load import load_model, model_info
from neuronlab.models.naming import model_name
from neuronlab.report.study import write_index, write_study_report
from neuronlab.study.base import STUDIES, Phases

FORMAT = "neuronlab.study/1"


def versions() -> dict[str, str]:
    import tokenizers
    import torch
    import transformers

    return {
        "neuronlab": package_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "python": platform.python_version(),
    }


def _folder(label: str) -> str:
    return re.sub(r"[^\w.-]+", "_", label).strip("_") or "model"


def _previous(path: Path, name: str, cfg: dict) -> dict[str, Any]:
    """The models a killed run of the same study with the same settings finished ({} otherwise)."""
    if not path.is_file():
        return {}
    old = read_json(path, "study results", (FORMAT,))
    same = old.get("study") == name and old.get("config") == json.loads(json.dumps(cfg))  # tuples as JSON lists
    return old["models"] if same else {}


def study(
    name: str,
    models: Sequence[str | Path],
    out: str | Path,
    size: str = "docs",
    config: Config | None = None,
    dtype: str | None = None,
    device: str | None = None,
    log=print,
    overrides: Sequence[str] = (),
    **settings: Any,
) -> dict[str, Any]:
    """Run study `name` on every model (module doc); `size` picks the preset (smoke, docs, paper), `config` or the
    config's fields as keywords change it (`overrides`: the same as NAME=VALUE texts, the command line's --set).
    Returns what results.json holds."""
    kind = STUDIES[name]
    settings = {**parse_settings(kind.config, list(overrides)), **settings}
    cfg = configured(kind.config, config if config is not None else kind.settings(size), settings, f"study {name}")
    out = Path(out)
    check_writable(out / "results.json")
    saved = cfg.to_dict()
    results: dict[str, Any] = {
        "format": FORMAT,
        "study": name,
        "title": kind.title,
        "paper": kind.paper,
        "size": size,
        "config": saved,
        "dtype": dtype or "checkpoint",
        "versions": versions(),
        "models": _previous(out / "results.json", name, saved),
    }
    for ref in models:
        label = model_name(str(ref))
        if label in results["models"]:
            log(f"{name}: {label} done in an earlier run (results.json), not run again")
            continue
        phases = Phases()
        with phases("load"):
            model, tok = load_model(ref, dtype=dtype, device=device)
        figures = kind.measure(model, tok, cfg, out / _folder(label), phases)
        results["models"][label] = {
            "model": model_info(model),
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
            "seconds": phases.seconds,
            "figures": figures,
        }
        write_json(out / "results.json", results)  # after every model: a killed run keeps what it finished
        log(f"{name}: {label} in {sum(phases.seconds.values()) / 60:.1f} min")
        del model, tok
        gc.collect()
    return render(results, out)


def render(results: dict[str, Any], out: str | Path) -> dict[str, Any]:
    """Compute the claims from the stored figures, write them into results.json and write report.html."""
    kind = STUDIES[results["study"]]
    cfg = kind.config.from_dict(results["config"])
    claims = kind.claims({m: r["figures"] for m, r in results["models"].items()}, cfg)
    results["claims"] = [c.to_dict() for c in claims]
    write_json(Path(out) / "results.json", results)
    write_study_report(Path(out) / "report.html", results, claims)
    return results


def study_all(
    models: Sequence[str | Path], out: str | Path, size: str = "docs", names: Sequence[str] | None = None, **kwargs: Any
) -> dict[str, dict[str, Any]]:
    """Every study (or `names`) on every model into out/<study>/, and out/index.html linking their reports."""
    out = Path(out)
    done = {name: study(name, models, out / name, size, **kwargs) for name in (names or list(STUDIES))}
    write_index(out / "index.html", {name: (f"{name}/report.html", res) for name, res in done.items()})
    return done
