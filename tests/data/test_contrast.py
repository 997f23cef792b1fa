import json

import pytest

import neuronlab as nl
from neuronlab.data.contrast import (
    capital_task,
    check_items,
    ioi_task,
    pronoun_task,
    read_contrast,
    split,
    write_contrast,
)


def test_templated_tasks_and_swap():
    items = pronoun_task(girls=["Lily"], boys=["Tom"])
    assert items == [
        {
            "prompt": "Once upon a time, there was a little girl named Lily. One day,",
            "target": " she",
            "foil": " he",
            "group": "Lily",
        },
        {
            "prompt": "Once upon a time, there was a little boy named Tom. One day,",
            "target": " he",
            "foil": " she",
            "group": "Tom",
        },
    ]
    swapped = pronoun_task(girls=["Lily"], boys=["Tom"], swap=True)
    assert [(i["target"], i["foil"]) for i in swapped] == [(" he", " she"), (" she", " he")]
    for item in ioi_task(n_items=20):
        a, b = item["group"].split("+")
        assert item["target"] == " " + a and item["foil"] == " " + b
        assert item["prompt"].count(b) == 2 and item["prompt"].count(a) == 1 and item["prompt"].endswith(" to")
    caps = capital_task({"France": "Paris", "Italy": "Rome"})
    assert caps[0] == {
        "prompt": "The capital of France is Rome. The capital of France is",
        "target": " Paris",
        "foil": " Rome",
        "group": "France",
    }
    with pytest.raises(nl.NeuronlabError, match="two countries"):
        capital_task({"France": "Paris"})


def test_read_write_and_bad_items(tmp_path):
    items = ioi_task(n_items=5)
    write_contrast(tmp_path / "t.jsonl", items)
    assert read_contrast(tmp_path / "t.jsonl") == items
    (tmp_path / "plain.jsonl").write_text(json.dumps({"prompt": "a", "target": " b", "foil": " c"}) + "\n\n")
    assert read_contrast(tmp_path / "plain.jsonl") == [{"prompt": "a", "target": " b", "foil": " c", "group": "0"}]
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(nl.NeuronlabError, match="has no items"):
        read_contrast(tmp_path / "empty.jsonl")
    with pytest.raises(nl.NeuronlabError, match="no task file"):
        read_contrast(tmp_path / "missing.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a"\n')
    with pytest.raises(nl.NeuronlabError, match=r"bad\.jsonl:1 is not JSON"):
        read_contrast(tmp_path / "bad.jsonl")
    with pytest.raises(nl.NeuronlabError, match="item 1: needs non-empty strings"):
        check_items([{"prompt": "a", "target": " b"}])
    with pytest.raises(nl.NeuronlabError, match="target and foil are the same"):
        check_items([{"prompt": "a", "target": " b", "foil": " b"}])


def test_split_keeps_groups_apart():
    items = pronoun_task(templates=("A {kind} {name}.", "B {kind} {name}."))
    train, held = split(items, holdout=0.25, seed=3)
    assert len(train) + len(held) == len(items)
    names_train, names_held = {i["group"] for i in train}, {i["group"] for i in held}
    assert not names_train & names_held and len(names_held) == round(60 * 0.25)
    assert split(items, 0.25, seed=3) == (train, held)  # seeded
    with pytest.raises(nl.NeuronlabError, match="between 0 and 1"):
        split(items, holdout=1.0)
    with pytest.raises(nl.NeuronlabError, match="two groups"):
        split(items[:1])


def test_distinguishable_drops_items_whose_answers_share_a_first_token():
    from neuronlab.data.contrast import distinguishable
    from neuronlab.testing import char_tokenizer

    items = [
        {"prompt": "ab", "target": "xa", "foil": "xb", "group": "0"},
        {"prompt": "ab", "target": "x", "foil": "y", "group": "1"},
    ]
    assert distinguishable(items, char_tokenizer()) == ([items[1]], 1)
