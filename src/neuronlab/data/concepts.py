"""Concept files: per concept, sentences that express it (positives) and sentences that do not (negatives).

    concepts = read_concepts("concepts.jsonl")     # JSON / JSONL {concept, positive, negative?} or a folder
    concepts = template_concepts(["dog", "cat"])   # offline: the words in fixed templates
    concepts = generate_concepts(model, tok, ["dog", "cat"], per_concept=20)   # sentences the model writes
    write_concepts("concepts.jsonl", concepts)     # what a run used, to reproduce and audit it

Negatives, where a file gives none, are a seeded sample of the other concepts' positives (as many as the
concept's positives, or `ratio` times as many). Every sentence appears once in `sentence_list`, the table responses
are recorded over.
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

TEMPLATES = (
    "The {word} was here.",
    "I saw a {word} today.",
    "This is about the {word}.",
    "She talked about the {word}.",
    "A {word} is what we need.",
    "Look at that {word}!",
    "Everyone knows the {word}.",
    "He thought of the {word} again.",
)


def _check(concepts: dict[str, dict]) -> dict[str, dict]:
    for name, sets in concepts.items():
        if not sets.get("positive"):
            raise NeuronlabError(f"concept {name!r} has no positive sentences: give it at least one")
        if not all(isinstance(s, str) and s.strip() for s in sets["positive"] + sets.get("negative", [])):
            raise NeuronlabError(f"concept {name!r} has an empty or non-text sentence")
    return concepts


def add_negatives(concepts: dict[str, dict], seed: int = 0, ratio: float = 1.0) -> dict[str, dict]:
    """Give each concept without negatives a seeded sample of the other concepts' positives, `ratio` times as
    many as its positives (as many as there are, at most). More negatives cost nothing to record (responses are
    taken once per sentence) and steady AP; tau is relative to chance AP, so any ratio reads the same."""
    rng = random.Random(seed)
    out = {}
    for name, sets in concepts.items():
        negative = list(sets.get("negative") or [])
        if not negative:
            own = set(sets["positive"])
            pool = sorted({s for other, o in concepts.items() if other != name for s in o["positive"]} - own)
            if not pool:
                raise NeuronlabError(f"concept {name!r} has no negatives and no other concept to sample them from")
            negative = rng.sample(pool, min(round(ratio * len(sets["positive"])), len(pool)))
        out[name] = {"positive": list(sets["positive"]), "negative": negative}
    return out


def read_concepts(path: str | Path, seed: int = 0, ratio: float = 1.0) -> dict[str, dict]:
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
            concepts[str(row["concept"])] = {
                "positive": list(row["positive"]),
                "negative": list(row.get("negative") or []),
            }
    return add_negatives(_check(concepts), seed, ratio)


def write_concepts(path: str | Path, concepts: dict[str, dict]) -> None:
    write_text(path, "".join(json.dumps({"concept": c, **s}, ensure_ascii=False) + "\n" for c, s in concepts.items()))


def template_concepts(words: Sequence[str], templates: Sequence[str] = TEMPLATES, seed: int = 0) -> dict[str, dict]:
    """Offline concepts: each word in every template; negatives from the other words."""
    concepts = {w: {"positive": [t.format(word=w) for t in templates]} for w in words}
    return add_negatives(_check(concepts), seed)


def _example_prompt(examples: Sequence[tuple[str, str]]) -> str:
    shots = "".join(f"Word: {w}\nSentence: {s}\n" for w, s in examples)
    return "Example sentences that show how a word is used.\n" + shots + "Word: {word}\nSentence:"


# A base model continues a list of examples; the examples mix word classes (adverbs, mass and abstract nouns,
# verbs, adjectives, count nouns), so that no word reads wrong in the slot.
PROMPTS = tuple(
    _example_prompt(shots)
    for shots in (
        (
            ("quickly", "She finished her homework quickly and ran outside to play."),
            ("honesty", "Honesty matters more to him than winning."),
            ("bridge", "The old bridge over the river was closed for repairs."),
        ),
        (
            ("borrow", "Can I borrow your pencil for a minute?"),
            ("bright", "The morning sun was so bright that we had to close the curtains."),
            ("rice", "We cooked rice and beans for dinner."),
        ),
        (
            ("happiness", "Money cannot buy happiness."),
            ("swim", "The children learned to swim in the lake last summer."),
            ("careful", "Be careful when you cross the street."),
        ),
    )
)
CHAT_PROMPT = 'Write one short, natural sentence that uses the word "{word}". Reply with the sentence only.'
STORY_PROMPTS = ("Once upon a time, there was a {word}.", "One day, Lily saw a {word}.", "Tom liked the {word}.")
LABEL = re.compile(r"^\s*\w+:\s*")


def is_instruct(model, tokenizer) -> bool:
    """Whether to ask through the chat template: the tokenizer has one and the model's name says instruct/chat/it."""
    name = str(getattr(model, "name_or_path", "") or getattr(getattr(model, "config", None), "_name_or_path", ""))
    return bool(getattr(tokenizer, "chat_template", None)) and bool(
        re.search(r"instruct|chat|(^|[-_])it($|[-_.])", name, re.IGNORECASE)
    )


def word_pattern(word: str) -> re.Pattern:
    """The word as a word, or with a regular inflection (-s, -es, -ed, -d, -ing, -er, -ly)."""
    return re.compile(rf"\b{re.escape(word)}(?:s|es|ed|d|ing|er|ly)?\b", re.IGNORECASE)


def first_sentence(head: str, text: str) -> str:
    """The sentence a prompt's last line starts (without a `Label:`) completed by the generated `text`, up to the
    end of its first sentence or line. An answer that quotes its sentence ('Here is one: "..."') gives the quote."""
    head = LABEL.sub("", head.rsplit("\n", 1)[-1]).strip()
    text = text.strip().split("\n", 1)[0].strip()
    quoted = re.search(r"[\"\u201c]([^\"\u201c\u201d]{8,})[\"\u201d]", text)
    if not head and quoted and ":" in text[: quoted.start()]:
        text = quoted.group(1)
    text = re.split(r"(?<=[.!?])[\"')\]\u201d]*\s", text)[0].strip()
    return f"{head} {text}".strip().strip('"\u201c\u201d').strip()


def generate_concepts(
    model,
    tokenizer,
    words: Sequence[str],
    per_concept: int = 20,
    prompts: Sequence[str] | None = None,
    chat: bool | None = None,
    max_new_tokens: int = 32,
    tries: int = 4,
    seed: int = 0,
    batch_size: int = 48,
    drop_unwritten: bool = False,
    ratio: float = 1.0,
    progress: bool = True,
) -> dict[str, dict]:
    """Sentences a causal LM writes for each word (the paper had an LLM write them; any `load_model` model can
    write here). An instruct model (`chat`, by default `is_instruct`) is asked through its chat template
    (CHAT_PROMPT); a base model continues `prompts`, few-shot lists of word/sentence examples over several word
    classes (PROMPTS). A prompt's last line, without its `Label:`, starts the sentence, so a one-line template
    such as "Once upon a time, there was a {word}." is kept in it (STORY_PROMPTS, for TinyStories models).

    Each word gets 2 x `per_concept` samples a round, several words share one `generate` call of about
    `batch_size` rows (each distinct prompt computed once and its cache shared by its rows: `sample_rows`), and a
    word still short of sentences gets another round, up to `tries`. Sampling is seeded
    top-k 50 (a top-p sort over a 262k vocabulary costs more than the model's step); a newline ends a sentence. A
    sentence is cut at its first end, deduplicated, and kept when it has 3 to 40 words and holds the word as a
    word (or regularly inflected, `word_pattern`). A word with no sentence at all stops the run, or with
    `drop_unwritten` is left out (with a warning naming it). Negatives: `add_negatives` with `ratio`."""
    import warnings

    from neuronlab.data.batching import pad_id
    from neuronlab.data.sampling import sample_rows
    from neuronlab.progress import progress_bar

    chat = is_instruct(model, tokenizer) if chat is None else chat
    prompts = (CHAT_PROMPT,) if chat else tuple(prompts or PROMPTS)
    pad = pad_id(tokenizer, model)
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    stop = [t for t in [tokenizer.eos_token_id] + (newline if len(newline) == 1 else []) if t is not None]
    rows = 2 * per_concept  # more than needed, so that one round is usually enough

    def encode(text: str) -> tuple[str, list[int]]:
        if chat:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
            )
            return "", tokenizer(text, add_special_tokens=False)["input_ids"]
        return text, tokenizer(text)["input_ids"]

    found: dict[str, list[str]] = {word: [] for word in words}
    patterns = {word: word_pattern(word) for word in words}
    group = max(1, batch_size // rows)
    bar = progress_bar(len(words), "writing sentences", "word", enabled=progress)  # words written in full
    for attempt in range(tries):
        pending = [w for w in words if len(found[w]) < per_concept]
        for g in range(0, len(pending), group):
            part = pending[g : g + group]
            starts = [
                (word, *encode(prompts[i % len(prompts)].format(word=word))) for word in part for i in range(rows)
            ]
            row_seed = seed * 1_000_003 + attempt * 10_007 + g
            new = sample_rows(model, [ids for *_, ids in starts], max_new_tokens, pad, stop, row_seed)  # one prefill
            texts = tokenizer.batch_decode(new, skip_special_tokens=True)
            for (word, head, _), text in zip(starts, texts, strict=True):
                sentence = first_sentence(head, text)
                if 3 <= len(sentence.split()) <= 40 and patterns[word].search(sentence) and sentence not in found[word]:
                    found[word].append(sentence)
            bar.update(sum(len(found[w]) >= per_concept for w in part))
    bar.update(len(words) - bar.n)  # words that ran out of tries
    bar.close()
    missing = [w for w in words if not found[w]]
    if missing and not drop_unwritten:
        raise NeuronlabError(
            f"the model wrote no sentence that contains {missing[0]!r}: give it other prompts (or drop such words)"
        )
    if missing:
        warnings.warn(
            f"left out {len(missing)} words the model wrote no sentence for: {', '.join(missing)}", stacklevel=2
        )
    return add_negatives({w: {"positive": s[:per_concept]} for w, s in found.items() if s}, seed, ratio)


def read_words(path: str | Path) -> list[str]:
    """Concept words: the first column of each line (a plain list, or a ratings file's both words), lower-cased,
    each once, in order."""
    from neuronlab.data.corpora import read_lines

    words = []
    for line in read_lines(path):
        parts = line.split()
        words += parts[:2] if len(parts) >= 3 else parts[:1]
    return list(dict.fromkeys(w.lower() for w in words))


def sentence_list(concepts: dict[str, dict]) -> tuple[list[str], dict[str, int]]:
    """Every sentence once (positives and negatives of all concepts) and its row."""
    sentences = list(dict.fromkeys(s for sets in concepts.values() for s in sets["positive"] + sets["negative"]))
    return sentences, {s: i for i, s in enumerate(sentences)}
