"""Concept files: per concept, sentences that express it (positives) and sentences that do not (negatives).

    >>> concepts = read_concepts("concepts.jsonl")     # JSON / JSONL {concept, positive, negative?} or a folder
    >>> concepts = template_concepts(["dog", "cat"])   # offline: the words in fixed templates
    >>> concepts = generate_concepts(model, tok, ["dog", "cat"], per_concept=20)   # sentences the model writes
    >>> write_concepts("concepts.jsonl", concepts)     # what a run used, to reproduce and audit it

Negatives, where a file gives none, are a seeded sample of the other concepts' positives (as many as the
concept's positives). Every sentence appears once in `sentence_list`, the table responses are recorded over.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from pathlib import Path

from neuronlab.data.corpora import read_jsonl
from neuronlab.errors import NeuronlabError
from neuronlab.io import write_text

TEMPLATES = ("The {word} was here.", "I saw a {word} today.", "This is about the {word}.", "She talked about the {word}.",
             "A {word} is what we need.", "Look at that {word}!", "Everyone knows the {word}.",
             "He thought of the {word} again.")  # fmt: skip
PROMPTS = ("Once upon a time, there was a {word}.", "One day, Lily saw a {word}.", "Tom liked the {word}.")


def _check(concepts: dict[str, dict]) -> dict[str, dict]:
    for name, sets in concepts.items():
        if not sets.get("positive"):
            raise NeuronlabError(f"concept {name!r} has no positive sentences: give it at least one")
        if not all(isinstance(s, str) and s.strip() for s in sets["positive"] + sets.get("negative", [])):
            raise NeuronlabError(f"concept {name!r} has an empty or non-text sentence")
    return concepts


def add_negatives(concepts: dict[str, dict], seed: int = 0) -> dict[str, dict]:
    """Give each concept without negatives a seeded sample of the other concepts' positives."""
    rng = random.Random(seed)
    out = {}
    for name, sets in concepts.items():
        negative = list(sets.get("negative") or [])
        if not negative:
            own = set(sets["positive"])
            pool = sorted({s for other, o in concepts.items() if other != name for s in o["positive"]} - own)
            if not pool:
                raise NeuronlabError(f"concept {name!r} has no negatives and no other concept to sample them from")
            negative = rng.sample(pool, min(len(sets["positive"]), len(pool)))
        out[name] = {"positive": list(sets["positive"]), "negative": negative}
    return out


def read_concepts(path: str | Path, seed: int = 0) -> dict[str, dict]:
    """{concept: {"positive": [...], "negative": [...]}} from a JSON list, JSONL, or a folder of such files."""
    path = Path(path)
    files = sorted(p for p in path.iterdir() if p.suffix in (".json", ".jsonl")) if path.is_dir() else [path]
    if not files or not files[0].is_file():
        raise NeuronlabError(f"no concept file at {path} (JSON or JSONL of {{concept, positive, negative}})")
    concepts: dict[str, dict] = {}
    for file in files:
        if file.suffix == ".jsonl":
            rows = [row for _, row in read_jsonl(file, "concept")]
        else:
            try:
                rows = json.loads(file.read_text(encoding="utf-8"))
            except json.JSONDecodeError as err:
                raise NeuronlabError(f"{file} is not JSON ({err})") from None
        for row in rows if isinstance(rows, list) else [rows]:
            if not isinstance(row, dict) or "concept" not in row or "positive" not in row:
                raise NeuronlabError(f"{file}: every entry needs concept and positive (and may give negative)")
            if row["concept"] in concepts:
                raise NeuronlabError(f"concept {row['concept']!r} is given twice")
            concepts[str(row["concept"])] = {"positive": list(row["positive"]), "negative": list(row.get("negative") or [])}
    return add_negatives(_check(concepts), seed)


def write_concepts(path: str | Path, concepts: dict[str, dict]) -> None:
    write_text(path, "".join(json.dumps({"concept": c, **s}, ensure_ascii=False) + "\n" for c, s in concepts.items()))


def template_concepts(words: Sequence[str], templates: Sequence[str] = TEMPLATES, seed: int = 0) -> dict[str, dict]:
    """Offline concepts: each word in every template; negatives from the other words."""
    concepts = {w: {"positive": [t.format(word=w) for t in templates]} for w in words}
    return add_negatives(_check(concepts), seed)


def generate_concepts(model, tokenizer, words: Sequence[str], per_concept: int = 20, prompts: Sequence[str] = PROMPTS,
                      max_new_tokens: int = 24, tries: int = 4, seed: int = 0) -> dict[str, dict]:  # fmt: skip
    """Sentences a causal LM writes for each word: a prompt that names the word (the templates control for
    everything but the word), continued by sampling (seeded) up to the end of the first sentence; deduplicated,
    and kept only if the whole contains the word as a word. The paper had its sentences written by an LLM; any
    `load_model` model can be the writer."""
    import torch

    from neuronlab.data.batching import left_padded, pad_id

    concepts = {}
    for w, word in enumerate(words):
        found: list[str] = []
        pattern = re.compile(rf"\b{re.escape(word)}\b", re.IGNORECASE)
        for attempt in range(tries):
            if len(found) >= per_concept:
                break
            torch.manual_seed(seed * 1_000_003 + w * 101 + attempt)
            starts = [prompts[i % len(prompts)].format(word=word) for i in range(per_concept)]
            for _, enc in left_padded(model, tokenizer, starts, len(starts)):
                with torch.no_grad():
                    ids = model.generate(**enc, do_sample=True, top_p=0.9, max_new_tokens=max_new_tokens,
                                         pad_token_id=pad_id(tokenizer, model))  # fmt: skip
                texts = tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
                for start, text in zip(starts, texts):
                    sentence = re.split(r"(?<=[.!?])\s", text.strip())[0].strip()
                    candidate = f"{start} {sentence}".strip() if sentence else ""
                    if candidate and pattern.search(candidate) and candidate not in found:
                        found.append(candidate)
        if not found:
            raise NeuronlabError(f"the model wrote no sentence that contains {word!r}: give it other prompts")
        concepts[word] = {"positive": found[:per_concept]}
    return add_negatives(concepts, seed)


def sentence_list(concepts: dict[str, dict]) -> tuple[list[str], dict[str, int]]:
    """Every sentence once (positives and negatives of all concepts) and its row."""
    sentences = list(dict.fromkeys(s for sets in concepts.values() for s in sets["positive"] + sets["negative"]))
    return sentences, {s: i for i, s in enumerate(sentences)}
