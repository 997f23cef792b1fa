"""The real pretrained tiny Llama from ../shared: loading, recording and intervening on real weights."""

import pytest
import torch

import neuronlab as nl

from .conftest import STORIES, needs_shared

pytestmark = needs_shared(STORIES)

STORY_TEXTS = {
    "girl": [
        "Lily was a little girl. She liked to play with her ball in the park.",
        "Once upon a time, there was a girl named Sue. She had a red hat.",
    ],
    "boy": [
        "Tom was a little boy. He liked to play with his dog.",
        "Once upon a time, there was a boy named Max. He had a big truck.",
    ],
}


@pytest.fixture(scope="module")
def stories():
    return nl.load_model(STORIES)


def test_greedy_story_is_unchanged_under_an_empty_plan(stories):
    model, tok = stories
    expected = (STORIES / "expected_greedy_200steps.txt").read_text(encoding="utf-8")
    ids = torch.tensor([[tok.bos_token_id]])
    with torch.no_grad(), nl.apply(model, nl.Plan([])):
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=200, do_sample=False)
    assert tok.decode(out[0], skip_special_tokens=True).strip() == expected.strip()


def test_record_and_intervene_on_real_weights(stories, tmp_path):
    model, tok = stories
    info = nl.model_info(model)
    assert (info["model_type"], info["n_layers"], info["d_ff"], info["d_model"]) == ("llama", 5, 172, 64)
    stats = nl.record(model, tok, STORY_TEXTS, batch_size=2, progress=False, pooled_texts=2)
    # every non-BOS token counted, per group
    n_tokens = [sum(len(tok(t)["input_ids"]) - 1 for t in texts) for texts in STORY_TEXTS.values()]
    assert stats.tokens.tolist() == n_tokens
    p = stats.probability
    assert ((p > 0) & (p < 1)).float().mean() > 0.5  # SiLU: real neurons fire on some tokens, not all
    stats.save(tmp_path / "s.safetensors")
    nl.Stats.load(tmp_path / "s.safetensors").check_model(model)

    # silencing the neurons that fire most for the girl stories changes what the model predicts after "she"
    top = torch.topk(stats.probability[0] - stats.probability[1], 20, dim=-1).indices
    ns = nl.NeuronSet({"girl": {layer: top[layer].tolist() for layer in range(5)}}, meta={"site": "act"})
    ns.validate(model)
    ids = tok("Lily was a little girl. She", return_tensors="pt").input_ids
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with nl.apply(model, [nl.Zero(neurons=ns)]):
            zeroed = model(input_ids=ids).logits
        baked = nl.bake(model, nl.Plan([nl.Zero(neurons=ns)]))(input_ids=ids).logits
    assert (plain - zeroed).abs().max() > 1e-2
    torch.testing.assert_close(baked, zeroed, rtol=1e-4, atol=1e-4)


def test_lens_and_continuations_with_a_dummy_prefix_tokenizer(stories):
    from neuronlab.analyze.lens import logit_lens
    from neuronlab.evaluate.perplexity import continuation_ids

    model, tok = stories
    _, ids = continuation_ids(tok, "Lily was a little girl. One day,", " she")
    assert tok.convert_ids_to_tokens(ids) == ["▁she"]  # in context; alone it would start with a bare "▁"
    lens = logit_lens(
        model, tok, ["Lily was a little girl. One day,", "Tom was a little boy. One day,"], targets=[" she", " he"], k=3
    )
    last = lens["layers"][4]
    assert last["target_rank"] == [0, 0] and last["top"][0][0][0] == "▁she"
    assert lens["layers"][0]["target_rank"][0] > 0  # the answer appears only in later layers


def test_arith_pipeline_from_the_cli(tmp_path):
    """lens -> extract -> patch -> ablate on a relation the model knows: she after a girl's name, he after a
    boy's. What the vector does there is reported, not assumed: the plain task is well above chance."""
    from typer.testing import CliRunner

    from neuronlab.analyze.arithmetic import load_vector
    from neuronlab.cli import app

    girls = ["Lily", "Sue", "Mia", "Anna", "Lucy", "Sara", "Emma", "Amy", "Jane", "Kate"]
    boys = ["Tom", "Max", "Ben", "Tim", "Sam", "Jack", "Bob", "Joe", "Leo", "Jake"]
    (tmp_path / "girls.csv").write_text("name,pronoun\n" + "".join(f"{n},she\n" for n in girls))
    (tmp_path / "all.csv").write_text(
        "name,pronoun\n" + "".join(f"{n},she\n" for n in girls) + "".join(f"{n},he\n" for n in boys)
    )
    run = lambda *args: CliRunner().invoke(app, [*args, "--model", str(STORIES)])  # noqa: E731
    template = ["--template", "{x} was happy. Then {y}"]
    res = run("lens", "--prompt", "Lily was very happy. Then", "--target", " she", "--plot", str(tmp_path / "l.png"))
    assert res.exit_code == 0 and "layer   4:" in res.output, res.output
    assert (tmp_path / "l.png").read_bytes()[:4] == b"\x89PNG"
    res = run(
        "arith",
        "extract",
        "--pairs",
        str(tmp_path / "girls.csv"),
        "--layer",
        "4",
        "--out",
        str(tmp_path / "o.safetensors"),
        *template,
    )
    assert res.exit_code == 0 and "o-vector of layer 4" in res.output, res.output
    vector, meta = load_vector(tmp_path / "o.safetensors")
    assert vector.shape == (64,) and meta["layer"] == 4 and meta["prompts"] == 10
    res = run(
        "arith",
        "patch",
        "--vector",
        str(tmp_path / "o.safetensors"),
        "--pairs",
        str(tmp_path / "girls.csv"),
        "--layer",
        "4",
        "--plot",
        str(tmp_path / "p.png"),
    )
    assert res.exit_code == 0 and "add x1.0 at layers [4]" in res.output, res.output
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    res = run("arith", "ablate", "--pairs", str(tmp_path / "all.csv"), *template, "--plot", str(tmp_path / "a.png"))
    assert res.exit_code == 0 and "zeroed from layer 4" in res.output, res.output
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    plain = float(res.output.split("plain: accuracy ")[1].split()[0])
    assert plain >= 0.5  # the model knows the relation in this template (measured 0.60 with two shots)
