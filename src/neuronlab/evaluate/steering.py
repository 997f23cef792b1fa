"""What steering a target language's neurons does: perplexity matrix, Language Steering Shift, generation
shift and a factor sweep (Rahmanisa et al. 2025). Each takes `plan_for(target) -> Plan`, e.g.

    plan_for = lambda t: steering_plan(ns, t, "p_max", stats=stats)
    ppl = perplexity_matrix(model, tok, eval_texts, targets, plan_for)
    lss = lss_matrix(model, tok, items, targets, plan_for)
    gen = generation_shift(model, tok, prompts, targets, plan_for)

LSS: for an item in language L with objects in several languages,
s = log P(object_T | prompt_L) - log P(object_L | prompt_L) (each summed over the object's tokens);
LSS(L -> T) = share of L's items whose s increases under T's intervention. Diagonal entries are undefined (NaN).
The `neuronlab eval perplexity | lss | generate` commands are one call each: steered_perplexity, steered_lss and
generate_under_plans take {label: Plan} (and read and write the files).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch

from neuronlab.data.batching import left_padded, pad_id
from neuronlab.data.tasks import lss_items_from_texts, read_lss_items
from neuronlab.dist import in_blocks, world
from neuronlab.errors import NeuronlabError
from neuronlab.evaluate.langid import LanguageIdentifier
from neuronlab.evaluate.perplexity import continuation_logprob, perplexity
from neuronlab.intervene.apply import apply
from neuronlab.intervene.plan import Plan
from neuronlab.io import write_json
from neuronlab.models.resolve import arch_spec
from neuronlab.progress import progress_bar

PlanFor = Callable[[str], Plan]


def perplexity_matrix(
    model,
    tokenizer,
    texts: Mapping[str, Sequence[str]],
    targets: Sequence[str],
    plan_for: PlanFor,
    batch_size: int = 16,
    max_length: int = 512,
    baseline: dict[str, float] | None = None,
    progress: bool = True,
) -> dict:
    """{"baseline": {L: ppl}, "steered": {T: {L: ppl}}, "change": {T: {L: steered / baseline - 1}}}. `baseline`:
    the plain perplexities of these texts with these settings, when another matrix already measured them."""
    within = lambda t: apply(model, plan_for(t))  # noqa: E731
    return changed_perplexity(model, tokenizer, texts, targets, within, batch_size, max_length, baseline, progress)


def changed_perplexity(
    model,
    tokenizer,
    texts: Mapping[str, Sequence[str]],
    targets: Sequence[str],
    within: Callable[[str], AbstractContextManager],
    batch_size: int = 16,
    max_length: int = 512,
    baseline: dict[str, float] | None = None,
    progress: bool = True,
) -> dict:
    """`perplexity_matrix` with each target's change made by the context manager `within(target)` (any change:
    a plan's hooks, silenced experts)."""
    runs = len(targets) + (not baseline)
    bar = progress_bar(sum(map(len, texts.values())) * runs, "perplexity", "line", progress)

    def ppl(lines):
        value = perplexity(model, tokenizer, lines, batch_size, max_length)
        bar.update(len(lines))
        return value

    baseline = baseline or {lang: ppl(lines) for lang, lines in texts.items()}
    steered = {}
    for t in targets:
        bar.set_postfix_str(f"{t}'s change")
        with within(t):
            steered[t] = {lang: ppl(lines) for lang, lines in texts.items()}
    bar.close()
    change = {t: {lang: steered[t][lang] / baseline[lang] - 1 for lang in texts} for t in targets}
    return {"baseline": baseline, "steered": steered, "change": change}


def _scores(model, tokenizer, pairs: list[tuple[dict, str]], batch_size: int, bar) -> list[float]:
    """log P(object | prompt) of each (item, language) row, a few batches at a time (the same batches with and
    without a plan, so an unchanged score stays bit-equal)."""
    out: list[float] = []
    step = batch_size * world()[1] * 4
    for start in range(0, len(pairs), step):
        part = pairs[start : start + step]
        prompts = [item["prompt"] for item, _ in part]
        objects = [item["objects"][lang] for item, lang in part]
        out += continuation_logprob(model, tokenizer, prompts, objects, batch_size).tolist()
        bar.update(len(part))
    return out


def lss_matrix(
    model,
    tokenizer,
    items: list[dict],
    targets: Sequence[str],
    plan_for: PlanFor,
    batch_size: int = 32,
    cache: dict | None = None,
    progress: bool = True,
) -> dict:
    """{"langs", "targets", "matrix": {L: {T: LSS}}, "off_diagonal": {T: mean over L != T}, "n_items"}. Pass the
    same `cache` (a dict) to several calls on the same items (other plans, factors) to score the plain model's rows
    once."""
    langs = sorted({item["lang"] for item in items})
    matrix: dict[str, dict[str, float]] = {lang: {} for lang in langs}
    work = {}
    for t in targets:
        chosen = [i for i, item in enumerate(items) if item["lang"] != t and t in item["objects"]]
        pairs = [(i, lang) for i in chosen for lang in (t, items[i]["lang"])]
        rows = [(items[i], lang) for i, lang in pairs]
        # the same rows in the same batches with and without the plan, so an unchanged score stays bit-equal
        key = (batch_size, tuple((item["prompt"], item["objects"][lang]) for item, lang in rows))
        work[t] = chosen, pairs, rows, key
    total = sum(len(rows) * (1 + (cache is None or key not in cache)) for _, _, rows, key in work.values())
    bar = progress_bar(total, "LSS", "row", progress)
    for t in targets:
        chosen, pairs, rows, key = work[t]
        bar.set_postfix_str(f"{t}'s neurons")
        plain = cache.get(key) if cache is not None else None
        if plain is None:
            plain = _scores(model, tokenizer, rows, batch_size, bar)
            if cache is not None:
                cache[key] = plain
        base = dict(zip(pairs, plain, strict=True))
        with apply(model, plan_for(t)):
            new = dict(zip(pairs, _scores(model, tokenizer, rows, batch_size, bar), strict=True))
        ups: dict[str, list[bool]] = {}
        for i in chosen:
            src = items[i]["lang"]
            before = base[(i, t)] - base[(i, src)]
            after = new[(i, t)] - new[(i, src)]
            ups.setdefault(src, []).append(after > before)
        for lang in langs:
            matrix[lang][t] = sum(ups[lang]) / len(ups[lang]) if ups.get(lang) else math.nan
    bar.close()
    off = {t: _nanmean([matrix[lang][t] for lang in langs if lang != t]) for t in targets}
    return {"langs": langs, "targets": list(targets), "matrix": matrix, "off_diagonal": off, "n_items": len(items)}


def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int = 24,
    batch_size: int = 16,
    bar=None,
) -> list[str]:
    """Greedy continuations (text after the prompt) of each prompt; batched with left padding. Under
    torch.distributed each rank continues a block of the prompts and every rank gets all continuations. `bar`: a
    progress bar to advance by the prompts of each batch."""
    return in_blocks(list(prompts), lambda part: _generate(model, tokenizer, part, max_new_tokens, batch_size, bar))


def _generate(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, batch_size: int, bar=None) -> list[str]:
    out = []
    for _, enc in left_padded(model, tokenizer, prompts, batch_size):
        _check_room(model, enc["input_ids"].shape[1] + max_new_tokens)
        with torch.no_grad():
            ids = model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id(tokenizer, model)
            )
        out += tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        if bar is not None:
            bar.update(world()[1] * enc["input_ids"].shape[0])
    return out


def _check_room(model, length: int) -> None:
    limit = arch_spec(model).position_limit(model.config)
    if limit is not None and length > limit:
        raise NeuronlabError(
            f"prompt plus new tokens is {length} tokens, but the model has {limit} positions: "
            "shorten the prompts (fewer shots) or generate fewer tokens"
        )


def generation_shift(
    model,
    tokenizer,
    prompts: Mapping[str, Sequence[str]],
    targets: Sequence[str],
    plan_for: PlanFor,
    max_new_tokens: int = 24,
    samples: int = 2,
    progress: bool = True,
) -> dict:
    """Share of greedy generations from prompts in other languages identified as T, without and with T's
    intervention: {"baseline": {T: share}, "steered": {T: share}, "samples": [...]}. A target with no prompt in
    another language gets NaN (there is nothing to shift)."""
    lid = LanguageIdentifier(sorted(set(prompts) | set(targets)))
    flat = [(lang, p) for lang, ps in prompts.items() for p in ps]
    total = len(flat) + sum(sum(lang != t for lang, _ in flat) for t in targets)
    bar = progress_bar(total, "generation", "prompt", progress)
    plain = generate(model, tokenizer, [p for _, p in flat], max_new_tokens, bar=bar)
    plain_ids = [lid(text) for text in plain]
    result: dict[str, Any] = {"baseline": {}, "steered": {}, "samples": []}
    for t in targets:
        keep = [k for k, (lang, _) in enumerate(flat) if lang != t]
        if not keep:
            result["baseline"][t] = result["steered"][t] = math.nan
            continue
        bar.set_postfix_str(f"{t}'s neurons")
        with apply(model, plan_for(t)):
            steered = generate(model, tokenizer, [flat[k][1] for k in keep], max_new_tokens, bar=bar)
        result["baseline"][t] = sum(plain_ids[k] == t for k in keep) / len(keep)
        result["steered"][t] = sum(lid(text) == t for text in steered) / len(keep)
        for k, text in list(zip(keep, steered, strict=True))[:samples]:
            result["samples"].append(
                {"target": t, "lang": flat[k][0], "prompt": flat[k][1], "plain": plain[k], "steered": text}
            )
    bar.close()
    return result


def factor_sweep(
    model,
    tokenizer,
    make_plan: Callable[[str, float], Plan],
    factors: Sequence[float],
    targets: Sequence[str],
    texts: dict[str, Sequence[str]],
    items: list[dict],
    max_ppl_increase: float = 0.5,
    progress: bool = True,
    baseline: dict[str, float] | None = None,
    cache: dict | None = None,
    batch_size: int = 16,
    max_length: int = 512,
) -> dict:
    """For each factor: mean off-diagonal LSS per target and mean off-target perplexity change; then, per
    target, the factor with the highest LSS whose off-target perplexity rises by at most `max_ppl_increase`
    (0.5 = +50%), or None if no factor stays under the bound. `factors` are passed to `make_plan(target, f)`
    as they are, so a sweep over variants works too:
    `factor_sweep(model, tok, lambda t, v: steering_plan(ns, t, v, stats=stats), ["p_max", "p_median"], ...)`.
    The plain model is scored once for every factor; `baseline` (plain perplexities of these texts) and `cache`
    (an `lss_matrix` cache) bring in what another evaluation of the same texts and items already scored."""
    rows, plain = [], {} if cache is None else cache
    for f in factors:
        plan_for = lambda t, f=f: make_plan(t, f)  # noqa: E731
        lss = lss_matrix(model, tokenizer, items, targets, plan_for, cache=plain, progress=progress)["off_diagonal"]
        ppl = perplexity_matrix(model, tokenizer, texts, targets, plan_for, batch_size, max_length, baseline, progress)
        change, baseline = ppl["change"], ppl["baseline"]
        off_ppl = {t: _nanmean([c for lang, c in change[t].items() if lang != t]) for t in targets}
        rows.append({"factor": f, "lss": lss, "off_target_ppl_change": off_ppl})
    best = {}
    for t in targets:
        ok = [r for r in rows if r["off_target_ppl_change"][t] <= max_ppl_increase]
        best[t] = max(ok, key=lambda r: r["lss"][t])["factor"] if ok else None
    return {"rows": rows, "best": best, "max_ppl_increase": max_ppl_increase}


# ---------------------------------------------------------------- under {label: Plan}, what `neuronlab eval` runs


def steered_perplexity(
    model,
    tokenizer,
    texts: Mapping[str, Sequence[str]],
    plans: Mapping[str, Plan] | None = None,
    batch_size: int = 8,
    max_length: int = 512,
    out: str | Path | None = None,
) -> dict:
    """result = steered_perplexity(model, tok, {"en": lines}, {"fr": plan}, out="ppl.json")

    {"baseline": {L: ppl}} without `plans`, else `perplexity_matrix` under each plan ({target: Plan}); written to
    `out` (JSON) when given. `neuronlab eval perplexity` is this call."""
    result: dict[str, Any]
    if not plans:
        result = {"baseline": {g: perplexity(model, tokenizer, t, batch_size, max_length) for g, t in texts.items()}}
    else:
        result = perplexity_matrix(model, tokenizer, texts, list(plans), plans.__getitem__, batch_size, max_length)
    if out is not None:
        write_json(out, result)
    return result


def steered_lss(
    model,
    tokenizer,
    plans: Mapping[str, Plan],
    items: str | Path | None = None,
    texts: Mapping[str, list[str]] | None = None,
    n_items: int = 20,
    out: str | Path | None = None,
) -> dict:
    """result = steered_lss(model, tok, {"fr": plan}, items="lss.jsonl", out="lss.json")

    `lss_matrix` under each plan ({target: Plan}) on the items of a JSONL file (`items`) or `n_items` a language
    built from aligned lines (`texts`: {language: lines}); written to `out` (JSON) when given. `neuronlab eval lss`
    is this call."""
    if (items is None) == (texts is None):
        raise NeuronlabError("give the items either as a file (items=) or as aligned lines (texts=)")
    found = read_lss_items(items) if items is not None else lss_items_from_texts(dict(texts or {}), n_items)
    result = lss_matrix(model, tokenizer, found, list(plans), plans.__getitem__)
    if out is not None:
        write_json(out, result)
    return result


def generate_under_plans(
    model, tokenizer, prompts: Sequence[str], plans: Mapping[str, Plan] | None = None, max_new_tokens: int = 32
) -> dict[str, list[str]]:
    """texts = generate_under_plans(model, tok, ["The cat"], {"fr": plan}, max_new_tokens=16)

    Greedy continuations of every prompt, plainly and under each plan: {"plain": [...], label: [...]}, one text a
    prompt, in the order of `prompts`. `neuronlab eval generate` is this call."""
    out = {"plain": generate(model, tokenizer, prompts, max_new_tokens)}
    for label, plan in (plans or {}).items():
        with apply(model, plan):
            out[label] = generate(model, tokenizer, prompts, max_new_tokens)
    return out
