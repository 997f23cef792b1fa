"""The SLAM study as one call and one command, on two models side by side (stories260K, a real tiny Llama, and a
tiny random GPT-2): results.json holds what the claims are computed from, the MSD by layer is recomputed with numpy
from the stored statistics, the cost figures are checked against the parameters they count, and the claims are the
figures' arithmetic."""

import json

import numpy as np
import pytest

import neuronlab as nl
from neuronlab.study.base import STUDIES

from ..conftest import FLORES, STORIES, needs_shared

pytestmark = [pytest.mark.slow, needs_shared(STORIES), needs_shared(FLORES)]
SMALL = dict(
    size="smoke",
    flores=str(FLORES),
    languages=("eng", "fra", "deu"),
    lines=4,
    k=2,
    steps=2,
    batch_size=2,
    train_lines=8,
    held_out=4,
    cost_tokens=32,
    log=lambda *_: None,
)


def _msd_by_hand(path, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(activated neurons [languages, layers], MSD over languages [layers]) from the stored counts, with numpy."""
    stats = nl.Stats.load(path)
    share = stats.active.numpy() / stats.tokens.numpy()[:, None, None]
    counts = (share > threshold).sum(-1).astype(float)
    return counts, ((counts - counts.mean(0)) ** 2).mean(0)


def test_the_study_on_two_models_matches_numpy_and_the_parameters(model_dir, tmp_path):
    out = tmp_path / "slam"
    results = nl.study("slam", [STORIES, model_dir], out, **SMALL)
    saved = json.loads((out / "results.json").read_text())
    assert saved["claims"] == results["claims"] and saved["config"]["k"] == 2 and saved["size"] == "smoke"
    assert set(saved["models"]) == {"stories260K", model_dir.name}
    for label in saved["models"]:
        run = saved["models"][label]
        figures, sel = run["figures"], run["figures"]["selection"]
        assert {"load", "record and select layers", "cost of a step", "fine-tune"} <= set(run["seconds"])
        assert figures["languages"] == ["eng", "fra", "deu"] and figures["layers"] == run["model"]["n_layers"]
        counts, msd = _msd_by_hand(out / label / "stats.safetensors")
        assert np.allclose(sel["msd_scores"], msd)
        assert np.allclose([sel["activated"][x] for x in figures["languages"]], counts)
        top = sorted(sorted(range(len(msd)), key=lambda layer: (-msd[layer], layer))[:2])
        assert sel["msd"] == top == figures["finetune"]["layers"]
        assert (out / label / "layers.json").is_file() and (out / label / "finetune" / "delta.safetensors").is_file()
        cost = figures["cost"]
        assert cost["memory_ratio"] == cost["full"]["memory_bytes"] / cost["ffn_only"]["memory_bytes"]
        assert figures["finetune"]["steps"] == 2 and figures["finetune"]["trainable"] == cost["ffn_only"]["trainable"]
    # stories260K: up and down of 2 layers (64 x 172 each, no bias); the full fine-tune keeps a gradient and two
    # AdamW moments of every float32 value (and a step counter per tensor)
    model, _ = nl.load_model(STORIES)
    cost = saved["models"]["stories260K"]["figures"]["cost"]
    values = sum(p.numel() for p in model.parameters())
    assert cost["ffn_only"]["trainable"] == 2 * 2 * 64 * 172 and cost["full"]["trainable"] == values
    tensors = len(list(model.parameters()))
    assert 3 * 4 * values <= cost["full"]["memory_bytes"] <= 3 * 4 * values + 8 * tensors
    # the claims are the figures' arithmetic, with the rules the page states
    layers, fraction, tuned = results["claims"]
    for label, run in saved["models"].items():
        figures = run["figures"]
        share = sum(layer < 2 for layer in figures["selection"]["msd"]) / 2
        assert layers["values"][label] == share
        assert layers["verdicts"][label] == (
            "holds" if share >= 0.8 else "does not hold" if share <= 0.5 else "inconclusive"
        )
        assert str(figures["selection"]["msd"]) in layers["measure"]
        c = figures["cost"]
        assert fraction["values"][label] == c["memory_ratio"]
        assert fraction["verdicts"][label] == (
            "does not hold" if c["memory_ratio"] < 2 else "holds" if c["step_ratio"] >= 1 else "inconclusive"
        )
        before, after = figures["finetune"]["perplexity_before"], figures["finetune"]["perplexity_after"]
        gain, english = 1 - after["fra"] / before["fra"], after["eng"] / before["eng"] - 1
        assert tuned["values"][label] == pytest.approx(gain)
        want = "does not hold" if gain <= 0 or english > 0.05 else "holds" if english <= 0.01 else "inconclusive"
        assert tuned["verdicts"][label] == want
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "stories260K" in page and model_dir.name in page
    # a second run gives the same figures but for the measured step times
    again = nl.study("slam", [STORIES], tmp_path / "again", **SMALL)["models"]["stories260K"]["figures"]
    first = saved["models"]["stories260K"]["figures"]
    for figures in (again, first):
        figures["cost"].pop("step_ratio")
        for part in ("ffn_only", "full"):
            figures["cost"][part].pop("step_seconds")
    assert again == first


def test_bad_settings_fail_with_one_clear_error(tmp_path):
    kind = STUDIES["slam"]
    with pytest.raises(nl.NeuronlabError, match="run into the held-out lines"):
        kind.config(train_lines=950)
    with pytest.raises(nl.NeuronlabError, match="no FLORES-200 files"):
        nl.study("slam", [STORIES], tmp_path / "x", **{**SMALL, "flores": str(tmp_path)})
    with pytest.raises(nl.NeuronlabError, match="has no file for xyz"):
        nl.study("slam", [STORIES], tmp_path / "y", **{**SMALL, "target": "xyz"})


def test_the_command_runs_the_study_with_a_changed_setting(tmp_path):
    from typer.testing import CliRunner

    from neuronlab.cli import app

    out = tmp_path / "slam"
    args = ["study", "slam", "-m", str(STORIES), "--out", str(out), "--size", "smoke", "--set", f"flores={FLORES}"]
    sets = ["languages=eng,fra", "lines=3", "k=2", "steps=1", "held_out=3", "cost_tokens=16"]
    result = CliRunner().invoke(app, [*args, *(w for s in sets for w in ("--set", s))])
    assert result.exit_code == 0, result.output
    assert "- The layers that handle languages" in result.output and "stories260K: " in result.output
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["languages"] == ["eng", "fra"] and saved["config"]["steps"] == 1
