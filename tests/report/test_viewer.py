"""The neuron browser: its data equal the stats (token texts against the tokenizer), and the page opens in headless
Chromium without errors and shows the neuron's contexts."""

import json
import re
import shutil
import subprocess
import tempfile

import pytest
import torch
from typer.testing import CliRunner

import neuronlab as nl
from neuronlab.cli import app
from neuronlab.record.topk import BEFORE
from neuronlab.report.viewer import write_view

from ..conftest import TEXTS, tiny_model

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.fixture(scope="module")
def recorded(tok, tmp_path_factory):
    model = tiny_model("llama")
    stats = nl.record(model, tok, TEXTS, batch_size=3, max_length=16, contexts=True, top_k=4, progress=False)
    path = tmp_path_factory.mktemp("view") / "s.safetensors"
    stats.save(path)
    return stats, nl.lape(stats, top_rate=0.05), path


def page_data(path) -> dict:
    text = path.read_text(encoding="utf-8")
    found = re.search(r"<script type='application/json' id='data'>(.*?)</script>", text, re.S)
    assert found is not None, "no data block"
    return json.loads(found.group(1))


def test_view_holds_the_neurons_contexts_and_probabilities(recorded, tok, tmp_path):
    stats, ns, _ = recorded
    data = page_data(write_view(stats, tmp_path, ns))
    shown = {(n["layer"], n["neuron"]) for n in data["neurons"]}
    assert shown == ns.pairs()
    entry = data["neurons"][0]
    layer, neuron = entry["layer"], entry["neuron"]
    assert entry["sets"] == [g for g in ns.groups if neuron in ns[g].get(layer, [])]
    assert entry["probability"] == [round(float(p), 4) for p in stats.probability[:, layer, neuron]]
    for c, (value, g, t, p) in zip(entry["contexts"], stats.contexts.where(layer, neuron), strict=True):
        assert (c["value"], c["group"], c["text"], c["position"]) == (round(value, 4), g, t, p)
        ids = tok(TEXTS[stats.groups[g]][t])["input_ids"]
        window = p // 16 * 16  # contexts stay inside the 16-token window of the peak
        lo, hi = max(window, p - BEFORE), min(window + 16, len(ids), p + 4)
        assert c["tokens"] == [tok.decode([i]) for i in ids[lo:hi]] and c["peak"] == p - lo
    ap = torch.rand(6, stats.n_layers, stats.width, generator=torch.Generator().manual_seed(0))
    expertise = nl.Expertise([f"c{i}" for i in range(6)], {"ap": ap})
    first = page_data(write_view(stats, tmp_path / "ap", ns, expertise))["neurons"][0]
    best = ap[:, layer, neuron].argsort(descending=True)[:5].tolist()  # the five concepts of highest AP
    assert first["ap"] == [[f"c{i}", round(float(ap[i, layer, neuron]), 4)] for i in best]
    unfiltered = page_data(write_view(stats, tmp_path / "all", limit=7))  # no set: the 7 of lowest entropy
    assert len(unfiltered["neurons"]) == 7
    assert [n["entropy"] for n in unfiltered["neurons"]] == sorted(n["entropy"] for n in unfiltered["neurons"])


def test_view_command(recorded, tmp_path):
    _stats, ns, path = recorded
    ns.save(tmp_path / "n.json")
    change = {"en": {"en": 0.5, "fr": 0.125}}  # a demo's deactivation matrix: zeroing en's set
    results = {k: {} for k in ("config", "model", "languages", "targets", "checks", "lss", "generation")}
    (tmp_path / "results.json").write_text(json.dumps({**results, "perplexity_deactivate": {"change": change}}))
    result = CliRunner().invoke(
        app,
        [
            "view",
            "--stats",
            str(path),
            "--neurons",
            str(tmp_path / "n.json"),
            "--results",
            str(tmp_path / "results.json"),
            "--out",
            str(tmp_path / "v"),
        ],
    )
    assert result.exit_code == 0, result.output
    shown = page_data(tmp_path / "v" / "index.html")["neurons"]
    assert len(shown) == ns.total() - _shared(ns)
    assert all(n["zeroing"] == ({"en": change["en"]} if "en" in n["sets"] else {}) for n in shown)
    plain = nl.Stats.load(path)
    plain.contexts = None
    plain.save(tmp_path / "plain.safetensors")
    result = CliRunner().invoke(app, ["view", "--stats", str(tmp_path / "plain.safetensors"), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "record them with --contexts" in result.output


def _shared(ns) -> int:
    """Neurons counted in more than one group (shown once)."""
    return ns.total() - len(ns.pairs())


def dump_dom(url: str) -> tuple[str, str]:
    """The DOM of `url` after load (scripts run) and Chromium's log, from a fresh profile that reaches no network."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        run = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--enable-logging=stderr",
                "--v=0",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout, run.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (apt-get install chromium); CI installs it")
def test_view_opens_in_headless_chromium(recorded, tmp_path):
    stats, ns, _ = recorded
    path = write_view(stats, tmp_path, ns)
    layer, neuron = next((layer, idx[0]) for layer, idx in ns[ns.groups[0]].items())
    dom, log = dump_dom(f"{path.as_uri()}#L{layer}N{neuron}")
    assert "Uncaught" not in log and '<div id="errors"></div>' in dom
    detail = dom[dom.index('<div id="detail"') :]
    assert detail.startswith('<div id="detail">')  # shown (not hidden)
    assert f"L{layer}N{neuron}: layer {layer}, neuron {neuron}" in detail
    top = page_data(path)["neurons"]
    want = next(n for n in top if (n["layer"], n["neuron"]) == (layer, neuron))["contexts"]
    lines = re.findall(r'<div class="ctx">(.*?)</div>', detail)
    assert len(lines) == len(want)
    for line, c in zip(lines, want, strict=True):  # the rendered tokens, in order, with the peak outlined
        spans = re.findall(r'<span class="tok( peak)?"[^>]*>(.*?)</span>', line)
        assert [s[1] for s in spans] == [t.replace("&", "&amp;").replace("<", "&lt;") for t in c["tokens"]]
        assert [i for i, s in enumerate(spans) if s[0]] == [c["peak"]]
    dom, log = dump_dom(path.as_uri())  # the index: one row a neuron
    assert "Uncaught" not in log and dom.count('<tr><td><a href="#L') == len(top)
