"""Few-shot translation on parallel (FLORES-format) files, greedy, scored with sacrebleu's BLEU and chrF.

    src = read_lines("eng_Latn.devtest"); ref = read_lines("fra_Latn.devtest")
    hyps = translate(model, tok, src[100:150], shots=list(zip(src[:2], ref[:2])), tgt_name="French")
    score(hyps, ref[100:150])                  # {"bleu": ..., "chrf": ...}

Honours an active `nl.apply` plan, so the same call measures translation with and without steering.
The prompt is the shots then the sentence, each as "{src_name}: ...\\n{tgt_name}: ...", blank-line separated;
the hypothesis is the generated text up to its first newline. `neuronlab eval translate` is `translate_files`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from neuronlab.data.corpora import read_parallel
from neuronlab.errors import NeuronlabError
from neuronlab.evaluate.steering import generate
from neuronlab.io import write_json


def translation_prompt(src: str, shots: Sequence[tuple[str, str]], src_name: str, tgt_name: str) -> str:
    examples = [f"{src_name}: {s}\n{tgt_name}: {t}" for s, t in shots]
    return "\n\n".join([*examples, f"{src_name}: {src}\n{tgt_name}:"])


def translate(
    model,
    tokenizer,
    sources: Sequence[str],
    shots: Sequence[tuple[str, str]] = (),
    src_name: str = "English",
    tgt_name: str = "French",
    max_new_tokens: int = 64,
    batch_size: int = 8,
) -> list[str]:
    prompts = [translation_prompt(s, shots, src_name, tgt_name) for s in sources]
    outputs = generate(model, tokenizer, prompts, max_new_tokens, batch_size)
    return [out.strip().split("\n")[0].strip() for out in outputs]


def score(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu defaults)."""
    import sacrebleu

    if len(hypotheses) != len(references) or not references:
        raise NeuronlabError(f"{len(hypotheses)} hypotheses for {len(references)} references: give one each")
    return {
        "bleu": sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score,
        "chrf": sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score,
    }


def translate_and_score(
    model,
    tokenizer,
    sources: Sequence[str],
    references: Sequence[str],
    shots: int = 2,
    start: int = 100,
    n: int = 50,
    src_name: str = "English",
    tgt_name: str = "French",
    max_new_tokens: int = 96,
    plans: dict | None = None,
) -> dict[str, dict]:
    """Translate lines start..start+n of aligned `sources` (the first `shots` pairs are the examples), plainly and
    under each plan of `plans` ({label: Plan}); {"plain" | label: {"bleu", "chrf", "hypotheses"}}."""
    from neuronlab.intervene.apply import apply

    chosen, refs = list(sources[start : start + n]), list(references[start : start + n])
    if not chosen:
        raise NeuronlabError(f"no lines from {start}: there are {len(sources)}")
    examples = list(zip(sources[:shots], references[:shots], strict=True))
    run = lambda: translate(model, tokenizer, chosen, examples, src_name, tgt_name, max_new_tokens)  # noqa: E731
    hyps = {"plain": run()}
    for label, plan in (plans or {}).items():
        with apply(model, plan):
            hyps[label] = run()
    return {k: {**score(h, refs), "hypotheses": h} for k, h in hyps.items()}


def translate_files(
    model,
    tokenizer,
    src: str | Path,
    ref: str | Path,
    plans: dict | None = None,
    *,
    src_name: str = "English",
    tgt_name: str = "French",
    shots: int = 2,
    start: int = 100,
    n: int = 50,
    max_new_tokens: int = 96,
    out: str | Path | None = None,
) -> dict[str, dict]:
    """scores = translate_files(model, tok, "eng_Latn.devtest", "fra_Latn.devtest", {"fr": plan}, out="mt.json")

    `translate_and_score` on two line-aligned files (a pair blank on either side is dropped), plainly and under each
    plan; written to `out` (JSON) when given. `neuronlab eval translate` is this call."""
    sources, references = read_parallel(src, ref)
    if not sources[start : start + n]:
        raise NeuronlabError(f"no lines from {start}: the files have {len(sources)}")
    result = translate_and_score(
        model,
        tokenizer,
        sources,
        references,
        shots=shots,
        start=start,
        n=n,
        src_name=src_name,
        tgt_name=tgt_name,
        max_new_tokens=max_new_tokens,
        plans=plans,
    )
    if out is not None:
        write_json(out, result)
    return result
