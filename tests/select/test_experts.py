"""Expert neurons: AP/AUROC against scikit-learn with ties, a planted concept neuron, responses resume, alignment."""

import json

import numpy as np
import pytest
import torch

import neuronlab as nl
from neuronlab.analyze.alignment import cosine_matrix, jaccard_matrix, spearman
from neuronlab.data.concepts import STORY_PROMPTS, read_concepts, sentence_list, template_concepts
from neuronlab.intervene.steer import expert_plan
from neuronlab.select.experts import Expertise, expertise, responses

from ..conftest import STORIES, char_tokenizer, needs_shared, tiny_model

PLANTED = {0: [7], 2: [3, 30]}


@pytest.mark.parametrize("seed", range(4))
def test_ap_and_auroc_equal_scikit_learn_with_ties(seed):
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, size=(40, 25)).astype(float)  # few values: many ties
    scores[:, 0] = 1.0  # one column all tied
    labels = rng.random(40) < 0.3
    labels[:2] = True
    ap = nl.average_precision(torch.tensor(scores), torch.tensor(labels)).numpy()
    auc = nl.auroc(torch.tensor(scores), torch.tensor(labels)).numpy()
    for j in range(scores.shape[1]):
        assert ap[j] == pytest.approx(average_precision_score(labels, scores[:, j]), abs=1e-12)
        assert auc[j] == pytest.approx(roc_auc_score(labels, scores[:, j]), abs=1e-12)


def _planted_model():
    """Llama whose planted neurons' gates read only dimension 0 of the embedding, which only the token 'Z' has;
    attention and FFN outputs are zeroed, so every layer reads the embeddings."""
    model, tok = tiny_model("llama"), char_tokenizer()
    z = tok.convert_tokens_to_ids("Z")
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        emb[:, 0] = 0
        emb[z] = 0
        emb[z, 0] = 3.0
        for i, layer in enumerate(model.model.layers):
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
            layer.mlp.gate_proj.weight[:, 0] = 0
            for n in PLANTED.get(i, []):
                layer.mlp.gate_proj.weight[n] = 0
                layer.mlp.gate_proj.weight[n, 0] = 5.0
    return model, tok


def _concepts():
    g = np.random.default_rng(0)
    word = lambda: "".join(g.choice(list("abcdefghijklmnop"), 5))  # noqa: E731
    return {
        "zed": {"positive": [f"{word()} Z {word()}" for _ in range(8)]},
        "other": {"positive": [f"{word()} {word()} q" for _ in range(8)]},
        "more": {"positive": [f"{word()} x {word()}" for _ in range(8)]},
    }


def test_planted_neurons_and_only_they_are_the_experts(tmp_path):
    from neuronlab.data.concepts import add_negatives

    model, tok = _planted_model()
    concepts = add_negatives(_concepts())
    sentences, index = sentence_list(concepts)
    resp = responses(model, tok, sentences, batch_size=5, progress=False)
    assert resp.dtype == torch.float16 and resp.shape == (len(sentences), 3, 64)
    ex = expertise(resp, concepts, index, {"site": "act", "model": nl.model_info(model)})
    zed = ex.index("zed")
    assert all(float(ex["ap"][zed, layer, n]) == 1.0 for layer, idx in PLANTED.items() for n in idx)
    assert ex.experts(0.99)["zed"] == PLANTED
    for c in ("other", "more"):  # their own letters (q, x) may have experts; never the planted neurons
        assert not any(n in ex.experts(0.99)[c].get(layer, []) for layer, idx in PLANTED.items() for n in idx)
    assert float(ex["off_mean"][zed, 0, 7]) == 0.0 and float(ex["on_p50"][zed, 0, 7]) > 10
    ex.save(tmp_path / "e.safetensors")
    back = Expertise.load(tmp_path / "e.safetensors")
    assert back.concepts == ex.concepts and torch.equal(back["auroc"], ex["auroc"])
    # forcing the experts to on_p50 writes exactly those values; zeroing silences them
    plan = expert_plan(ex, "zed", k=3)
    with nl.apply(model, plan), nl.trace(model, ["layers.2.act"]) as tr:
        model(**tok("abc", return_tensors="pt"))
    got = tr[nl.Site(2, "act")][0, -1, [3, 30]]
    assert torch.allclose(got, ex["on_p50"][zed, 2, [3, 30]].to(got.dtype))
    with nl.apply(model, expert_plan(ex, "zed", k=3, mode="zero")), nl.trace(model, ["layers.2.act"]) as tr:
        model(**tok("aZc", return_tensors="pt"))
    assert float(tr[nl.Site(2, "act")][0, :, [3, 30]].abs().max()) == 0.0


def test_responses_resume_after_an_interruption(tmp_path):
    model, tok = tiny_model("gpt2"), char_tokenizer()
    sentences = [f"sentence number {i} here" for i in range(11)]
    full = responses(model, tok, sentences, batch_size=3, progress=False, dtype=torch.float32)
    calls = {"n": 0}

    def boom(*_):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt

    handle = model.register_forward_pre_hook(boom)
    with pytest.raises(KeyboardInterrupt):
        responses(
            model,
            tok,
            sentences,
            batch_size=3,
            progress=False,
            dtype=torch.float32,
            checkpoint=tmp_path / "r.safetensors",
            checkpoint_every=0,
        )
    handle.remove()
    counted = []
    handle = model.register_forward_pre_hook(lambda *_: counted.append(1))
    again = responses(
        model, tok, sentences, batch_size=3, progress=False, dtype=torch.float32, checkpoint=tmp_path / "r.safetensors"
    )
    handle.remove()
    assert torch.equal(again, full) and len(counted) == 2  # batches 3 and 4 of 4 (6 of 11 sentences were saved)
    with pytest.raises(nl.NeuronlabError, match="made another way"):
        responses(model, tok, sentences, pool="mean", progress=False, checkpoint=tmp_path / "r.safetensors")


def test_jaccard_cosine_and_spearman_by_hand():
    from scipy.stats import spearmanr

    ns = nl.NeuronSet({"a": {0: [1, 2, 3]}, "b": {0: [2, 3], 1: [5]}, "c": {}, "d": {1: [5]}})
    j = jaccard_matrix(ns, ["a", "b", "c", "d"]).numpy()
    assert j[0, 1] == pytest.approx(2 / 4) and j[1, 3] == pytest.approx(1 / 3) and j[2, 2] == 0 and j[0, 0] == 1
    v = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(0))
    flat = v.reshape(4, -1).numpy()
    want = flat @ flat.T / np.outer(np.linalg.norm(flat, axis=1), np.linalg.norm(flat, axis=1))
    assert np.allclose(cosine_matrix(v).numpy(), want)
    ratings = [("a", "b", 5.0), ("a", "c", 1.0), ("b", "d", 3.0), ("a", "zzz", 2.0), ("c", "d", 2.5)]
    got = spearman(torch.tensor(j), ["a", "b", "c", "d"], ratings)
    rho = spearmanr([j[0, 1], j[0, 2], j[1, 3], j[2, 3]], [5.0, 1.0, 3.0, 2.5]).statistic
    assert got["pairs"] == 4 and got["spearman"] == pytest.approx(rho)


def test_concept_files_and_errors(tmp_path):
    (tmp_path / "c.jsonl").write_text(
        json.dumps({"concept": "dog", "positive": ["a dog ran"]})
        + "\n"
        + json.dumps({"concept": "cat", "positive": ["the cat sat"], "negative": ["x"]})
        + "\n"
    )
    c = read_concepts(tmp_path / "c.jsonl")
    assert c["dog"]["negative"] == ["the cat sat"] and c["cat"]["negative"] == ["x"]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"concept": "dog", "positive": []}) + "\n")
    with pytest.raises(nl.NeuronlabError, match="no positive sentences"):
        read_concepts(tmp_path / "bad.jsonl")
    with pytest.raises(nl.NeuronlabError, match="no concept file"):
        read_concepts(tmp_path / "none.jsonl")
    t = template_concepts(["dog", "cat", "bird"])
    assert all("dog" in s for s in t["dog"]["positive"]) and not any("dog" in s for s in t["dog"]["negative"])


def test_experts_cli_find_and_align(tmp_path):
    from typer.testing import CliRunner

    from neuronlab.cli import app

    model, tok = _planted_model()
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    from neuronlab.data.concepts import write_concepts

    concepts = {**_concepts(), "four": {"positive": ["ab Z cd", "Z and q"]}}
    write_concepts(tmp_path / "c.jsonl", concepts)
    (tmp_path / "ratings.txt").write_text("zed\tfour\t9\nzed\tother\t1\nother\tmore\t5\nfour\tmore\t2\n")
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "experts",
            "find",
            "-m",
            str(tmp_path / "m"),
            "--concepts",
            str(tmp_path / "c.jsonl"),
            "--out",
            str(tmp_path / "ex"),
            "--batch-size",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    assert nl.NeuronSet.load(tmp_path / "ex" / "experts.json").meta["site"] == "act"
    result = runner.invoke(
        app,
        [
            "experts",
            "align",
            "--experts",
            str(tmp_path / "ex"),
            "--human",
            str(tmp_path / "ratings.txt"),
            "--out",
            str(tmp_path / "al"),
            "--plot",
            str(tmp_path / "al.png"),
        ],
    )
    assert result.exit_code == 0, result.output
    res = json.loads((tmp_path / "al" / "alignment.json").read_text())
    assert res["pairs"] == 4 and -1 <= res["spearman"] <= 1
    ex = Expertise.load(tmp_path / "ex" / "expertise.safetensors")
    want = spearman(
        jaccard_matrix(ex.experts(0.5), ex.concepts),
        ex.concepts,
        [("zed", "four", 9), ("zed", "other", 1), ("other", "more", 5), ("four", "more", 2)],
    )
    assert res["spearman"] == pytest.approx(want["spearman"], nan_ok=True)
    assert set(res["intervals"]) == {"spearman", "ap_cosine", "input_embedding", "sentence_embedding"}
    result = runner.invoke(
        app,
        [
            "experts",
            "steer",
            "-m",
            str(tmp_path / "m"),
            "--experts",
            str(tmp_path / "ex"),
            "--out",
            str(tmp_path / "steer.json"),
            "--concept",
            "zed",
            "--k",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    steer = json.loads((tmp_path / "steer.json").read_text())
    assert list(steer["concepts"]) == ["zed"] and set(steer["modes"]) == {"force_all", "force_last", "zero", "dampen"}
    assert (
        "expertise of 4 concepts"
        in runner.invoke(app, ["inspect", str(tmp_path / "ex" / "expertise.safetensors")]).output
    )
    (tmp_path / "tri.csv").write_text(
        "word0,word1,word2,n_chose_word0,n_chose_word1,n_chose_word2,"
        "majority_odd_one_out_index\nzed,four,other,0,0,9,2\nzed,dog,cat,1,1,1,0\n"
    )
    result = runner.invoke(
        app,
        [
            "experts",
            "align",
            "--experts",
            str(tmp_path / "ex"),
            "--human",
            str(tmp_path / "ratings.txt"),
            "--out",
            str(tmp_path / "al2"),
            "--triplets",
            str(tmp_path / "tri.csv"),
            "--report",
        ],
    )
    assert result.exit_code == 0, result.output
    res2 = json.loads((tmp_path / "al2" / "alignment.json").read_text())
    assert res2["odd_one_out"]["triplets"] == 1  # the second triplet names words that are not concepts
    assert (tmp_path / "al2" / "alignment.html").read_text().count("data:image/png;base64,") == 3
    (tmp_path / "domains.txt").write_text("zed\tletters\nfour\tletters\nother\tend\nmore\tend\n")
    result = runner.invoke(
        app,
        [
            "experts",
            "tree",
            "--experts",
            str(tmp_path / "ex"),
            "--out",
            str(tmp_path / "t.json"),
            "--domains",
            str(tmp_path / "domains.txt"),
            "--plot",
            str(tmp_path / "t.png"),
        ],
    )
    assert result.exit_code == 0, result.output
    tree = json.loads((tmp_path / "t.json").read_text())
    assert sorted(tree["order"]) == sorted(ex.concepts) and tree["domains"]["pairs_within"] == 2
    result = runner.invoke(
        app,
        [
            "experts",
            "trend",
            "--run",
            f"early={tmp_path / 'al'}",
            "--run",
            f"late={tmp_path / 'al2'}",
            "--out",
            str(tmp_path / "trend.json"),
            "--plot",
            str(tmp_path / "trend.png"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "trend.json").read_text())["checkpoints"] == ["early", "late"]


SIMLEX = STORIES.parents[1] / "data" / "word_similarity" / "EN-SIMLEX-999.txt"
STORY_WORDS = [
    "apple",
    "beach",
    "bed",
    "bee",
    "boat",
    "box",
    "boy",
    "brother",
    "candy",
    "car",
    "cat",
    "chair",
    "child",
    "dog",
    "father",
    "friend",
    "girl",
    "hat",
    "horse",
    "ice",
    "juice",
    "lion",
    "man",
    "milk",
    "mother",
    "queen",
    "rabbit",
    "river",
    "sea",
    "sky",
    "sun",
    "teacher",
    "water",
    "woman",
]


@pytest.mark.slow
@needs_shared(STORIES)
def test_stories260k_experts_from_the_cli_with_sentences_it_writes(tmp_path):
    """34 SimLex-999 words that TinyStories knows (24 rated pairs). Measured with 20 sentences a word: Spearman of
    expert Jaccard 0.04 at tau 0.5 (-0.08 .. -0.12 at 0.6-0.9), AP cosine -0.19, input embeddings 0.06, sentence
    embeddings 0.07: a 260K-parameter model shows no alignment with people here. Forcing a word's top experts to
    on_p50 at every position lowers the word's probability (dog 0.018 -> 0.010 with 10 experts; 7 of 8 words):
    max-pooled experts fire on the word itself. At the last position only, the top 30 raise the word's first token
    for 5 of 8 words and lower it for 3 (mixed); neither is asserted."""
    from typer.testing import CliRunner

    from neuronlab.cli import app

    (tmp_path / "words.txt").write_text("\n".join(STORY_WORDS) + "\n")
    prompts = [arg for p in STORY_PROMPTS for arg in ("--prompt", p)]  # TinyStories starts that name the word
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "experts",
            "find",
            "-m",
            str(STORIES),
            "--words",
            str(tmp_path / "words.txt"),
            "--out",
            str(tmp_path / "ex"),
            "--per-concept",
            "5",
            *prompts,
        ],
    )
    assert result.exit_code == 0, result.output
    concepts = [json.loads(line) for line in (tmp_path / "ex" / "concepts.jsonl").read_text().splitlines()]
    assert [c["concept"] for c in concepts] == STORY_WORDS
    assert all(any(c["concept"] in s.lower() for s in c["positive"]) for c in concepts)
    result = runner.invoke(
        app,
        ["experts", "align", "--experts", str(tmp_path / "ex"), "--human", str(SIMLEX), "--out", str(tmp_path / "al")],
    )
    assert result.exit_code == 0, result.output
    res = json.loads((tmp_path / "al" / "alignment.json").read_text())
    print(result.output)
    assert res["pairs"] == 24 and all(
        -1 <= res[k] <= 1 for k in ("spearman", "ap_cosine", "input_embedding", "sentence_embedding")
    )


def test_aura_dampening_scales_each_neuron_by_its_auroc_and_bakes(tmp_path):
    from neuronlab.data.concepts import add_negatives

    model, tok = _planted_model()
    concepts = add_negatives(_concepts())
    sentences, index = sentence_list(concepts)
    ex = expertise(
        responses(model, tok, sentences, progress=False),
        concepts,
        index,
        {"site": "act", "model": nl.model_info(model)},
    )
    plan = expert_plan(ex, "zed", k=None, mode="dampen")
    auc = ex["auroc"][ex.index("zed")]
    chosen = plan.interventions[0].neurons["zed"]
    assert sum(len(v) for v in chosen.values()) == int((auc > 0.5).sum())
    assert all(float(plan.interventions[0].factor[2][chosen[2].index(n)]) == pytest.approx(0.0) for n in (3, 30))
    ids = tok("ab Z cd", return_tensors="pt")["input_ids"]
    with nl.trace(model, ["layers.1.act"]) as plain:
        model(ids)
    with nl.apply(model, plan), nl.trace(model, ["layers.1.act"]) as damped:
        model(ids)
    layer1 = chosen.get(1, [])
    want = plain[nl.Site(1, "act")][..., layer1] * (1 - 2 * (auc[1, layer1] - 0.5))
    assert torch.allclose(damped[nl.Site(1, "act")][..., layer1], want.to(torch.float32), atol=1e-6)
    with nl.apply(model, plan):
        hooked = model(ids).logits
    assert torch.allclose(nl.bake(model, plan)(ids).logits, hooked, atol=1e-5)
    plan.save(tmp_path / "aura.json")
    with nl.apply(model, nl.Plan.load(tmp_path / "aura.json")):
        assert torch.equal(model(ids).logits, hooked)


def test_tree_domains_and_odd_one_out_by_hand():
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    from neuronlab.analyze.alignment import concept_tree, domain_overlap, odd_one_out

    sim = torch.tensor([[1.0, 0.8, 0.1, 0.2], [0.8, 1.0, 0.3, 0.1], [0.1, 0.3, 1.0, 0.7], [0.2, 0.1, 0.7, 1.0]])
    names = ["dog", "cat", "car", "bus"]
    tree = concept_tree(sim, names)
    want = linkage(squareform(1 - sim.double().numpy(), checks=False), method="average")
    assert np.allclose(tree["linkage"], want) and set(tree["order"][:2]) in ({"dog", "cat"}, {"car", "bus"})
    d = domain_overlap(sim, names, {"dog": "animal", "cat": "animal", "car": "vehicle", "bus": "vehicle"})
    assert d["within"] == pytest.approx((0.8 + 0.7) / 2) and d["between"] == pytest.approx((0.1 + 0.2 + 0.3 + 0.1) / 4)
    triplets = [("dog", "cat", "car", 2), ("dog", "car", "bus", 0), ("dog", "cat", "bus", 0), ("dog", "cat", "owl", 2)]
    o = odd_one_out(sim, names, triplets)  # model: car, dog, bus -> two of three agree; owl is no concept
    assert o["triplets"] == 3 and o["agreement"] == pytest.approx(2 / 3)


def test_concept_steering_reads_the_models_own_probabilities_and_zero_equals_cut_weights():
    """Plain probabilities equal the model's softmax at each prompt's end; "zero" equals a copy of the model whose
    down-projection columns of the chosen experts are cut by hand."""
    import copy

    from neuronlab.evaluate.concept_steering import concept_steering
    from neuronlab.evaluate.perplexity import continuation_ids

    model, tok = tiny_model("llama"), char_tokenizer()
    g = torch.Generator().manual_seed(0)
    layers, width = len(model.model.layers), model.config.intermediate_size
    measures = {m: torch.rand(2, layers, width, generator=g) for m in ("ap", "auroc", "on_p50", "on_p90", "off_mean")}
    ex = Expertise(["ab", "cd"], measures, {"site": "act", "model": nl.model_info(model), "chance": [0.5, 0.5]})
    prompts = ["hello there", "a b c d e"]
    result = concept_steering(model, tok, ex, k=5, prompts=prompts, modes=("zero", "force_last"), progress=False)
    cut = copy.deepcopy(model)
    with torch.no_grad():
        for layer, neuron, _ in ex.top("cd", 5):
            cut.model.layers[layer].mlp.down_proj.weight[:, neuron] = 0
    for concept in ("ab", "cd"):
        first = [continuation_ids(tok, p, " " + concept)[1][0] for p in prompts]
        want = [
            model(**tok(p, return_tensors="pt")).logits[0, -1].softmax(-1)[t].item()
            for p, t in zip(prompts, first, strict=True)
        ]
        assert result["concepts"][concept]["plain"] == pytest.approx(sum(want) / 2, rel=1e-5)
    first = [continuation_ids(tok, p, " cd")[1][0] for p in prompts]
    want = [
        cut(**tok(p, return_tensors="pt")).logits[0, -1].softmax(-1)[t].item()
        for p, t in zip(prompts, first, strict=True)
    ]
    assert result["concepts"]["cd"]["zero"] == pytest.approx(sum(want) / 2, rel=1e-5)
    assert result["concepts"]["cd"]["zero"] != pytest.approx(result["concepts"]["cd"]["plain"], rel=1e-3)
    assert set(result["modes"]) == {"zero", "force_last"} and 0 <= result["modes"]["zero"]["raised"] <= 1


def test_rated_words_cover_the_most_pairs_and_intervals_bracket_rho():
    from neuronlab.analyze.alignment import bootstrap_interval, rated_words

    ratings = [("a", "b", 1.0), ("a", "c", 2.0), ("b", "c", 3.0), ("x", "y", 4.0), ("d", "e", 5.0), ("a", "x", 1.0)]
    assert sorted(rated_words(ratings, 3)) == ["a", "b", "c"]  # the triangle: 3 pairs from 3 words
    assert "c" not in rated_words(ratings, 3, keep=lambda w: w != "c")
    from scipy.stats import spearmanr

    assert bootstrap_interval([1, 2, 3, 4, 5, 6], [2, 4, 6, 8, 10, 12]) == pytest.approx([1.0, 1.0])
    g = np.random.default_rng(0)
    x = g.normal(size=200)
    y = x + g.normal(size=200)
    lo, hi = bootstrap_interval(list(x), list(y))
    assert lo < spearmanr(x, y).statistic < hi and hi - lo < 0.3


def test_first_sentence_keeps_the_sentence_and_drops_labels_and_chatter():
    from neuronlab.data.concepts import first_sentence, word_pattern

    assert first_sentence("Word: dog\nSentence:", " The dog ran home. Then it slept.\nWord: x") == "The dog ran home."
    assert first_sentence("Once upon a time, there was a dog.", " It was happy! More") == (
        "Once upon a time, there was a dog. It was happy!"
    )
    assert first_sentence("", 'Here is one: "The river was wide." I hope') == "The river was wide."
    assert word_pattern("run").search("She runs fast") and not word_pattern("cat").search("a catalog")
