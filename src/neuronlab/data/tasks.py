"""Evaluation items: Language Steering Shift items (JSONL) and prompts, read from files or built from text.

    items = read_lss_items("mlama.jsonl")   # {"lang": "fr", "prompt": "...", "objects": {"fr": "...", "en": "..."}}
    items = lss_items_from_texts(texts, n_items=20)
    prompts = prompts_from_texts(texts, n_prompts=5)

Built items cut line i of every language at its middle: the prompt is the first half of that line in L, and
object M is the next unit (a word, or two characters in scripts written without spaces) of line i in M, so
object L is the true continuation and the others are plausible words of the other languages. With parallel
corpora (FLORES) line i is the same sentence in every language.
"""

from __future__ import annotations

from pathlib import Path

from neuronlab.data.corpora import read_jsonl
from neuronlab.errors import NeuronlabError


def _units(line: str) -> tuple[list[str], str]:
    words = line.split()
    return (words, " ") if len(words) >= 4 else (list(line.replace(" ", "")), "")


def _cut(line: str) -> tuple[str, str] | None:
    units, sep = _units(line)
    if len(units) < 4:
        return None
    mid = len(units) // 2
    obj = units[mid] if sep else "".join(units[mid : mid + 2])
    return sep.join(units[:mid]), sep + obj


def lss_items_from_texts(texts: dict[str, list[str]], n_items: int = 20) -> list[dict]:
    """Items for every language from aligned line numbers (see module doc)."""
    items = []
    n = min(len(lines) for lines in texts.values())
    for i in range(min(n, n_items)):
        found = {lang: _cut(lines[i]) for lang, lines in texts.items()}
        cuts = {lang: c for lang, c in found.items() if c is not None}
        if len(cuts) < len(found):
            continue
        objects = {lang: c[1] for lang, c in cuts.items()}
        items += [{"lang": lang, "prompt": c[0], "objects": objects} for lang, c in cuts.items()]
    if not items:
        raise NeuronlabError("no line was long enough to build LSS items (4 words or characters at least)")
    return items


def prompts_from_texts(texts: dict[str, list[str]], n_prompts: int = 5, units: int = 3) -> dict[str, list[str]]:
    """The first `units` words (or 2 * units characters) of the first lines of each language."""
    out = {}
    for lang, lines in texts.items():
        prompts = []
        for line in lines[:n_prompts]:
            parts, sep = _units(line)
            prompts.append(sep.join(parts[: units if sep else 2 * units]))
        out[lang] = prompts
    return out


def read_lss_items(path: str | Path) -> list[dict]:
    """JSONL, one item a line: {"lang": L, "prompt": text in L, "objects": {language: object text}}."""
    items = []
    for n, item in read_jsonl(path, "items"):
        if not (
            isinstance(item, dict)
            and isinstance(item.get("prompt"), str)
            and isinstance(item.get("objects"), dict)
            and item.get("lang") in item["objects"]
        ):
            raise NeuronlabError(f"{path}:{n}: an item needs lang, prompt and objects, with an object in its own lang")
        items.append(item)
    return items
