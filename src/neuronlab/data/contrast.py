"""Contrast tasks for learned interventions: items `{prompt, target, foil}`; the intervention should make the
model prefer `target` over `foil` as the next token(s) after `prompt`.

    items = read_contrast("tasks.jsonl")             # one JSON object per line; optional "group"
    items = pronoun_task(swap=True)                  # "...a little girl named Lily. One day," -> " he", not " she"
    items = ioi_task(swap=True)                      # "When Mary and John ..., John gave a ball to" -> " John"
    items = capital_task()                           # "The capital of Italy is Paris. ... The capital of Italy is"
    train, held_out = split(items, holdout=0.25)     # whole groups (e.g. one name) go to one side

Templated builders write the natural answer as `target` and the distractor as `foil`; `swap=True` exchanges
them, which is the usual steering task ("flip she and he"). Tasks with two directions (girls' and boys' names)
give items of both, so one intervention must flip both ways. `group` keeps related items (all templates of one
name) on the same side of a split, so held-out metrics are on names the intervention never saw.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

from neuronlab.data.corpora import read_jsonl
from neuronlab.errors import NeuronlabError
from neuronlab.io import write_text
from neuronlab.registry import Registry

GIRLS = [
    "Lily",
    "Sue",
    "Anna",
    "Mia",
    "Lucy",
    "Amy",
    "Sara",
    "Jane",
    "Kate",
    "Emma",
    "Molly",
    "Daisy",
    "Rose",
    "Ella",
    "Zoe",
    "Lisa",
    "Mary",
    "Susie",
    "Kitty",
    "Bella",
    "Sophie",
    "Grace",
    "Alice",
    "Ruby",
    "Jenny",
    "Julie",
    "Annie",
    "Ellie",
    "Maria",
    "Katie",
]
BOYS = [
    "Tom",
    "Ben",
    "Tim",
    "Max",
    "Sam",
    "Jack",
    "Bob",
    "Timmy",
    "Joe",
    "Billy",
    "Jim",
    "Mark",
    "Leo",
    "Peter",
    "John",
    "Jake",
    "Alex",
    "Mike",
    "Bobby",
    "Tommy",
    "Dan",
    "Fred",
    "Paul",
    "Luke",
    "Toby",
    "Ted",
    "Nick",
    "Jimmy",
    "Adam",
    "Eric",
]
PRONOUN_TEMPLATES = ("Once upon a time, there was a little {kind} named {name}. One day,",)
IOI_TEMPLATES = (
    "When {a} and {b} went to the park, {b} gave a ball to",
    "Then, {a} and {b} had a lot of fun at the store. {b} gave a toy to",
    "After the lunch, {a} and {b} went to the house. {b} gave a cake to",
)
CAPITALS = {
    "France": "Paris",
    "Germany": "Berlin",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Japan": "Tokyo",
    "China": "Beijing",
    "Russia": "Moscow",
    "Egypt": "Cairo",
    "Greece": "Athens",
    "Poland": "Warsaw",
    "Austria": "Vienna",
    "Portugal": "Lisbon",
    "Ireland": "Dublin",
    "Norway": "Oslo",
    "Sweden": "Stockholm",
    "Finland": "Helsinki",
    "Denmark": "Copenhagen",
    "Hungary": "Budapest",
    "Turkey": "Ankara",
    "Kenya": "Nairobi",
    "Peru": "Lima",
    "Chile": "Santiago",
    "Cuba": "Havana",
    "Canada": "Ottawa",
    "Mexico": "Mexico City",
    "India": "New Delhi",
    "Thailand": "Bangkok",
    "Vietnam": "Hanoi",
    "Iran": "Tehran",
    "Argentina": "Buenos Aires",
}
CAPITAL_TEMPLATE = "The capital of {country} is {wrong}. The capital of {country} is"


def _item(prompt: str, target: str, foil: str, group: str, swap: bool) -> dict:
    target, foil = (foil, target) if swap else (target, foil)
    return {"prompt": prompt, "target": target, "foil": foil, "group": group}


TASKS: Registry[Callable[..., list[dict]]] = Registry("contrast task")  # name -> builder(swap=...)


@TASKS.register("pronoun")
def pronoun_task(
    girls: Sequence[str] = GIRLS,
    boys: Sequence[str] = BOYS,
    templates: Sequence[str] = PRONOUN_TEMPLATES,
    swap: bool = False,
) -> list[dict]:
    """ " she" after a girl's name and " he" after a boy's (swap: the other way round); group = the name."""
    items = []
    for template in templates:
        for kind, names, right, wrong in (("girl", girls, " she", " he"), ("boy", boys, " he", " she")):
            items += [_item(template.format(kind=kind, name=n), right, wrong, n, swap) for n in names]
    return items


@TASKS.register("ioi")
def ioi_task(
    names: Sequence[str] = GIRLS[:10] + BOYS[:10],
    templates: Sequence[str] = IOI_TEMPLATES,
    swap: bool = False,
    n_items: int = 200,
    seed: int = 0,
) -> list[dict]:
    """Indirect-object identification: the answer is the name not repeated (" a"), the foil the repeated one;
    group = the pair of names."""
    rng = random.Random(seed)
    items = []
    for _ in range(n_items):
        a, b = rng.sample(list(names), 2)
        template = rng.choice(list(templates))
        items.append(_item(template.format(a=a, b=b), " " + a, " " + b, f"{a}+{b}", swap))
    return items


@TASKS.register("capital")
def capital_task(
    capitals: dict[str, str] | None = None, template: str = CAPITAL_TEMPLATE, swap: bool = False, seed: int = 0
) -> list[dict]:
    """Country-capital conflicts: the context states another country's capital; target = the true capital,
    foil = the one in the context (swap: follow the context); group = the country."""
    capitals = dict(CAPITALS if capitals is None else capitals)
    if len(capitals) < 2:
        raise NeuronlabError("capital_task needs at least two countries")
    rng = random.Random(seed)
    countries = list(capitals)
    items = []
    for country in countries:
        other = rng.choice([c for c in countries if c != country])
        prompt = template.format(country=country, wrong=capitals[other])
        items.append(_item(prompt, " " + capitals[country], " " + capitals[other], country, swap))
    return items


def check_items(items: Sequence[dict], source: str = "the task") -> list[dict]:
    """Items with non-empty string prompt, target and foil (target != foil); group defaults to the item number."""
    if not items:
        raise NeuronlabError(f"{source} has no items: write one JSON object per line with prompt, target and foil")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not all(
            isinstance(item.get(k), str) and item[k] for k in ("prompt", "target", "foil")
        ):
            raise NeuronlabError(f"{source}, item {i + 1}: needs non-empty strings 'prompt', 'target' and 'foil'")
        if item["target"] == item["foil"]:
            raise NeuronlabError(f"{source}, item {i + 1}: target and foil are the same ({item['target']!r})")
        out.append({**item, "group": str(item.get("group", i))})
    return out


def distinguishable(items: Sequence[dict], tokenizer) -> tuple[list[dict], int]:
    """The items whose target and foil begin with different tokens after the prompt (the logit difference is
    taken on the first token), and how many were dropped. Names like " Joe" / " Jane" can share a first token
    in a small vocabulary."""
    from neuronlab.data.scoring import continuation_ids

    kept = [
        i
        for i in items
        if continuation_ids(tokenizer, i["prompt"], i["target"])[1][:1]
        != continuation_ids(tokenizer, i["prompt"], i["foil"])[1][:1]
    ]
    return kept, len(items) - len(kept)


def read_contrast(path: str | Path) -> list[dict]:
    """Items from a JSONL file (blank lines skipped); each checked as in `check_items`."""
    return check_items([cast(dict, item) for _, item in read_jsonl(path, "task")], str(path))  # checked there


def write_contrast(path: str | Path, items: Sequence[dict]) -> None:
    text = "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items)
    write_text(path, text)


def split(items: Sequence[dict], holdout: float = 0.25, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, held out): a seeded `holdout` share of the groups is held out, at least one group each side."""
    if not 0 < holdout < 1:
        raise NeuronlabError(f"holdout must be between 0 and 1, not {holdout}")
    groups = sorted({item["group"] for item in items})
    if len(groups) < 2:
        raise NeuronlabError("a split needs items from at least two groups")
    random.Random(seed).shuffle(groups)
    k = min(max(1, round(len(groups) * holdout)), len(groups) - 1)
    held = set(groups[:k])
    return [i for i in items if i["group"] not in held], [i for i in items if i["group"] in held]
