"""The neuron browser: one static HTML page (no server: open it from disk or any static host) over a stats file
recorded with top contexts.

    neuronlab view --stats s.safetensors --neurons neurons.json --out view/     # then open view/index.html
    write_view(stats, "view/", neurons=ns, effects=demo_results["perplexity_deactivate"]["change"])
    # view/index.html#L3N17: one neuron's page

The index lists neurons (filter by layer, group and score); a neuron's page shows its top contexts with each token
shaded by the neuron's value on it, its activation probability per group as bars, its LAPE entropy, its AP per
concept where an expertise is given, and, where `effects` are given ({set group: {group: relative perplexity
change}}, e.g. the demo's deactivation matrix), what zeroing its neuron set's group did to each group's perplexity.
Everything is in the page; token texts come from the stats file (`meta["pieces"]`).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import torch

from neuronlab.errors import NeuronlabError
from neuronlab.io import write_text
from neuronlab.models.naming import model_name
from neuronlab.record.stats import Stats
from neuronlab.record.topk import BEFORE, NONE, texts, unpack
from neuronlab.select.lape import lape_entropy
from neuronlab.select.neuron_set import NeuronSet


def neuron_id(layer: int, neuron: int) -> str:
    """The anchor of a neuron's page: index.html#L3N17."""
    return f"L{layer}N{neuron}"


def write_view(
    stats: Stats,
    out: str | Path,
    neurons: NeuronSet | None = None,
    expertise=None,
    effects: dict | None = None,
    limit: int = 500,
    title: str | None = None,
) -> Path:
    """Write out/index.html for the neurons of `neurons` (else the `limit` of lowest LAPE entropy, or of highest
    max with one group); returns its path."""
    if stats.contexts is None:
        raise NeuronlabError("these stats keep no top contexts: record them with --contexts (record(contexts=True))")
    entropy = lape_entropy(stats) if len(stats.groups) > 1 else None
    chosen = _choose(stats, entropy, neurons, limit)
    per_group = {"probability": stats.probability, "mean": stats.mean}
    data = {
        "title": title or f"neurons of {model_name(stats.meta)}",
        "site": stats.site,
        "groups": stats.groups,
        "tokens": stats.tokens.tolist(),
        "k": stats.top_k,
        "method": (neurons.meta.get("method") if neurons is not None else None) or "lowest LAPE entropy",
        "shown": len(chosen),
        "neurons": [
            _neuron(stats, layer, n, entropy, per_group, neurons, expertise, effects or {}) for layer, n in chosen
        ],
    }
    path = Path(out) / "index.html"
    write_text(path, _page(data))
    return path


def _choose(stats: Stats, entropy, neurons: NeuronSet | None, limit: int) -> list[tuple[int, int]]:
    score = entropy if entropy is not None else -stats.max.amax(0)
    if neurons is not None:
        pairs = sorted(neurons.pairs())
        bad = [(layer, n) for layer, n in pairs if layer >= stats.n_layers or n >= stats.width]
        if bad:
            raise NeuronlabError(
                f"neuron {bad[0]} is outside these stats ({stats.n_layers} layers x {stats.width}): "
                "give the neuron set found on the same model and site"
            )
    else:
        assert stats.contexts is not None  # checked by the page builder
        live = stats.contexts.key[:, 0] != NONE  # neurons with at least one counted token
        pairs = [(int(i) // stats.width, int(i) % stats.width) for i in torch.nonzero(live.flatten()).flatten()]
    pairs.sort(key=lambda p: (float(score[p]), p))
    return pairs[:limit]


def _neuron(
    stats: Stats, layer: int, n: int, entropy, per_group: dict, neurons: NeuronSet | None, expertise, effects: dict
) -> dict:
    top, pieces = stats.contexts, stats.meta.get("pieces", {})
    assert top is not None  # checked by the page builder
    contexts = []
    for j in range(top.k):
        key = int(top.key[layer, j, n])
        if key == NONE:
            break
        g, t, p = (int(x) for x in unpack(torch.tensor(key)))
        ids = top.tokens[layer, j, n].tolist()
        acts = top.acts[layer, j, n].float().tolist()
        first, last = min(i for i, x in enumerate(ids) if x >= 0), max(i for i, x in enumerate(ids) if x >= 0)
        contexts.append(
            {
                "value": round(float(top.value[layer, j, n]), 4),
                "group": g,
                "text": t,
                "position": p,
                "tokens": texts([pieces.get(str(x), f"<{x}>".encode().hex()) for x in ids[first : last + 1]]),
                "acts": [round(a, 3) for a in acts[first : last + 1]],
                "peak": BEFORE - first,
            }
        )
    sets = [g for g in neurons.groups if n in neurons[g].get(layer, [])] if neurons is not None else []
    entry: dict[str, Any] = {
        "id": neuron_id(layer, n),
        "layer": layer,
        "neuron": n,
        "sets": sets,
        "entropy": None if entropy is None else round(float(entropy[layer, n]), 4),
        "contexts": contexts,
        **{k: [round(float(x), 4) for x in v[:, layer, n]] for k, v in per_group.items()},
    }
    if expertise is not None:
        ap = expertise["ap"][:, layer, n]
        best = ap.topk(min(5, len(ap)))
        entry["ap"] = [
            [expertise.concepts[int(i)], round(float(v), 4)] for v, i in zip(best.values, best.indices, strict=True)
        ]
    entry["zeroing"] = {g: effects[g] for g in sets if g in effects}
    return entry


def _page(data: dict) -> str:
    """The page with `data` as JSON in a script block: every <, > and & (only ever inside JSON strings) is written as
    a \\u escape, so no corpus text (`</script>`, `<!--`, `<script>`) can end or re-open the block."""
    blob = json.dumps(data, ensure_ascii=False)
    blob = blob.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(data['title'])}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(data['title'])}</h1>"
        f"{BODY}<script type='application/json' id='data'>{blob}</script><script>{SCRIPT}</script></body></html>"
    )


STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:1.5em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}
th{cursor:pointer;background:#f6f6f6}.ctx{font-family:ui-monospace,monospace;white-space:pre;margin:.3em 0}
.tok{padding:0 1px;border-radius:2px}.peak{outline:2px solid #333}.bar{background:#4a7fd0;height:.9em}
.where{color:#777;font-size:.85em;margin-right:.6em}#errors{color:#b00}label{margin-right:1em}
.facts td:first-child{color:#555}.before{display:inline-block;min-width:14ch;text-align:right}
.ctx .where{display:inline-block;min-width:24ch}"""

BODY = """<p id='about'></p><div id='errors'></div><p id='note'></p>
<div id='index'><p><label>layer <select id='f-layer'><option value=''>all</option></select></label>
<label>group <select id='f-group'><option value=''>all</option></select></label>
<label>score at most <input id='f-score' type='number' step='any' size='6'></label><span id='count'></span></p>
<table id='neurons'><thead><tr><th data-k='id'>neuron</th><th data-k='layer'>layer</th><th data-k='sets'>groups</th>
<th data-k='entropy'>LAPE entropy</th><th data-k='top'>top value</th><th>top context</th></tr></thead><tbody></tbody>
</table></div>
<div id='detail' hidden><p><a href='#'>all neurons</a></p><h2 id='d-title'></h2><table class='facts' id='d-facts'>
</table><h3>Activation probability per group</h3><table id='d-bars'></table><h3>Top contexts</h3>
<p class='where'>Each token shaded by the neuron's value on it (orange above 0, blue below); the peak is outlined.</p>
<div id='d-contexts'></div></div>"""

SCRIPT = r"""
window.onerror = (msg) => { document.getElementById('errors').textContent += 'error: ' + msg + ' '; };
const D = JSON.parse(document.getElementById('data').textContent);
const byId = Object.fromEntries(D.neurons.map(n => [n.id, n]));
const el = (tag, text, cls) => { const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; };
const fmt = x => x === null || x === undefined ? '' : (typeof x === 'number' ? +x.toFixed(4) + '' : x);
document.getElementById('about').textContent = `${D.shown} neurons (${D.method}) at site ${D.site}; ` +
  `groups: ${D.groups.map((g, i) => g + ' (' + D.tokens[i] + ' tokens)').join(', ')}; top ${D.k} contexts a neuron.`;

function contextLine(c, scale) {
  const line = el('div', undefined, 'ctx');
  line.appendChild(el('span', `${fmt(c.value)}  ${D.groups[c.group]} text ${c.text} @${c.position}`, 'where'));
  const before = el('span', undefined, 'before'); line.appendChild(before);  // peaks line up
  c.tokens.forEach((t, i) => {
    const a = c.acts[i], s = el('span', t.replace(/\n/g, '\u23ce'), 'tok' + (i === c.peak ? ' peak' : ''));
    const alpha = Math.min(1, Math.abs(a) / scale);
    s.style.background = a >= 0 ? `rgba(255,140,0,${alpha})` : `rgba(60,120,220,${alpha})`;
    s.title = fmt(a); (i < c.peak ? before : line).appendChild(s); });
  return line;
}

const layers = [...new Set(D.neurons.map(n => n.layer))].sort((a, b) => a - b);
layers.forEach(l => document.getElementById('f-layer').appendChild(Object.assign(el('option', l), {value: l})));
D.groups.forEach(g => document.getElementById('f-group').appendChild(Object.assign(el('option', g), {value: g})));
let sortKey = 'entropy', sortDir = 1;
function renderIndex() {
  const fl = document.getElementById('f-layer').value, fg = document.getElementById('f-group').value;
  const fs = parseFloat(document.getElementById('f-score').value);
  const rows = D.neurons.filter(n => (fl === '' || n.layer == fl) && (fg === '' || n.sets.includes(fg)) &&
    (isNaN(fs) || n.entropy === null || n.entropy <= fs));
  const val = n => sortKey === 'top' ? (n.contexts.length ? n.contexts[0].value : -Infinity) :
    sortKey === 'sets' ? n.sets.join(',') : sortKey === 'id' ? n.layer * 1e7 + n.neuron : n[sortKey];
  rows.sort((a, b) => (val(a) > val(b) ? 1 : val(a) < val(b) ? -1 : 0) * sortDir);
  const body = document.querySelector('#neurons tbody'); body.replaceChildren();
  rows.forEach(n => { const tr = el('tr'), a = el('a', n.id); a.href = '#' + n.id;
    const td = el('td'); td.appendChild(a); tr.appendChild(td);
    [n.layer, n.sets.join(', '), fmt(n.entropy), n.contexts.length ? fmt(n.contexts[0].value) : '']
      .forEach(x => tr.appendChild(el('td', x)));
    const c = el('td'); if (n.contexts.length) c.appendChild(contextLine(n.contexts[0], n.contexts[0].value || 1));
    tr.appendChild(c); body.appendChild(tr); });
  document.getElementById('count').textContent = `${rows.length} shown`;
}
document.querySelectorAll('#neurons th[data-k]').forEach(th => th.onclick = () => {
  sortDir = sortKey === th.dataset.k ? -sortDir : 1; sortKey = th.dataset.k; renderIndex(); });
['f-layer', 'f-group', 'f-score'].forEach(id => document.getElementById(id).oninput = renderIndex);

function renderNeuron(n) {
  document.getElementById('d-title').textContent = `${n.id}: layer ${n.layer}, neuron ${n.neuron}`;
  const facts = document.getElementById('d-facts'); facts.replaceChildren();
  const fact = (k, v) => { const tr = el('tr'); tr.appendChild(el('td', k)); tr.appendChild(el('td', v));
    facts.appendChild(tr); };
  fact('groups (neuron set)', n.sets.join(', ') || '-');
  if (n.entropy !== null) fact('LAPE entropy', fmt(n.entropy));
  if (n.ap) fact('expert AP (best concepts)', n.ap.map(([c, v]) => `${c} ${fmt(v)}`).join(', '));
  Object.entries(n.zeroing).forEach(([g, ch]) => fact(`zeroing ${g}'s neurons: perplexity change`,
    Object.entries(ch).map(([l, v]) => `${l} ${v >= 0 ? '+' : ''}${(100 * v).toFixed(1)}%`).join(', ')));
  const bars = document.getElementById('d-bars'); bars.replaceChildren();
  D.groups.forEach((g, i) => { const tr = el('tr'); tr.appendChild(el('td', g));
    const td = el('td'), bar = el('div', undefined, 'bar'); bar.style.width = (300 * n.probability[i]) + 'px';
    td.appendChild(bar); tr.appendChild(td); tr.appendChild(el('td', fmt(n.probability[i])));
    tr.appendChild(el('td', 'mean ' + fmt(n.mean[i]))); bars.appendChild(tr); });
  const box = document.getElementById('d-contexts'); box.replaceChildren();
  const scale = n.contexts.length ? Math.max(...n.contexts.map(c => Math.max(...c.acts.map(Math.abs)))) || 1 : 1;
  if (!n.contexts.length) box.appendChild(el('p', 'no counted token'));
  n.contexts.forEach(c => box.appendChild(contextLine(c, scale)));
}

function route() {
  const n = byId[location.hash.slice(1)];
  document.getElementById('index').hidden = !!n; document.getElementById('detail').hidden = !n;
  if (n) renderNeuron(n);
  document.getElementById('note').textContent = !n && location.hash.length > 1 ?
    `no neuron ${location.hash.slice(1)} in this view` : '';
}
window.onhashchange = route; renderIndex(); route();
"""
