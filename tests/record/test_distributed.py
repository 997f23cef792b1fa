"""record, perplexity, expert responses, generation and continuation scores on 2 CPU ranks (gloo, spawned here)
equal one process; record also after a rank is killed mid-run."""

import os
import socket
import subprocess
import sys
from datetime import timedelta

import pytest
import torch
from typer.testing import CliRunner

import neuronlab as nl
from neuronlab.cli import app
from neuronlab.evaluate.steering import generate
from neuronlab.io import write_text

pytestmark = pytest.mark.slow
TEXTS = {
    "en": [f"the text number {i} " * (1 + i % 4) for i in range(13)],
    "fr": [f"le texte numéro {i}" + " et encore" * (i % 3) for i in range(9)],
}
# one text a forward: the same float32 values in any process
SETTINGS = dict(batch_size=1, bucket=2, pooled_texts=3, contexts=True, top_k=5, progress=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank, size, port, model_dir, out, crash_after, experts=False):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=size, timeout=timedelta(seconds=60))
    model, tok = nl.load_model(model_dir)
    calls = []

    def crash(_module, _args):
        calls.append(1)
        if len(calls) == crash_after:
            raise KeyboardInterrupt  # a rank killed mid-run

    if crash_after and rank == 1:
        model.register_forward_pre_hook(crash)
    try:
        if experts:  # a mixture of experts' statistics, alone
            nl.record_experts(model, tok, TEXTS, batch_size=1, progress=False, checkpoint=out, checkpoint_every=0)
            return
        nl.record(model, tok, TEXTS, checkpoint=out, checkpoint_every=0, **SETTINGS)
        ppl = nl.perplexity(model, tok, TEXTS["en"], batch_size=1)  # each rank scores its share; sums are added
        got = nl.responses(model, tok, TEXTS["fr"], batch_size=1, checkpoint=f"{out}.responses", progress=False)
        story = generate(model, tok, TEXTS["en"][:5], 6, batch_size=1)  # a block of prompts a rank, gathered
        scores = nl.continuation_logprob(model, tok, TEXTS["en"][:5], [" a"] * 5, batch_size=1)
        write_text(f"{out}.ppl", repr(ppl))  # under ranks only rank 0 writes
        write_text(f"{out}.from{rank}", "")
        if rank == 0:
            torch.save((got, story, scores), f"{out}.got")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def llama_dir(tiny_dir):
    return tiny_dir("llama")


def _assert_equal(got, want):
    pooled = want.pooled_n is not None
    assert (got.pooled_n is not None) == pooled
    for key in ("tokens", "texts", "active") + (("pooled_n",) if pooled else ()):
        assert torch.equal(getattr(got, key), getattr(want, key)), key
    for key in ("sum", "sum_sq", "max") + (("pooled_mean", "pooled_max") if pooled else ()):
        torch.testing.assert_close(getattr(got, key), getattr(want, key), rtol=1e-12, atol=0, equal_nan=True)
    for a, b in zip(got.contexts.tensors(), want.contexts.tensors(), strict=True):  # text indices over the whole corpus
        assert torch.equal(a, b)
    assert got.meta["pieces"] == want.meta["pieces"]


def test_two_ranks_equal_one_process_also_after_a_rank_is_killed(llama_dir, tmp_path):
    import torch.multiprocessing as mp

    model, tok = nl.load_model(llama_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the ranks: another thread count changes float32 matmul rounding
    try:
        want = nl.record(model, tok, TEXTS, **SETTINGS)
        ppl = nl.perplexity(model, tok, TEXTS["en"], batch_size=1)
        responses = nl.responses(model, tok, TEXTS["fr"], batch_size=1, progress=False)
        story = generate(model, tok, TEXTS["en"][:5], 6, batch_size=1)
        scores = nl.continuation_logprob(model, tok, TEXTS["en"][:5], [" a"] * 5, batch_size=1)
    finally:
        torch.set_num_threads(threads)
    assert want.meta["world_size"] == 1

    out = tmp_path / "s.safetensors"
    with pytest.raises(
        (mp.ProcessRaisedException, mp.ProcessExitedException)
    ):  # rank 1 dies at its 4th forward; spawn stops rank 0 too
        mp.spawn(_rank, args=(2, _free_port(), str(llama_dir), str(out), 4), nprocs=2)
    assert not out.exists()
    partial = nl.Stats.load(tmp_path / "s.rank1of2.safetensors")
    assert 0 < int(partial.texts.sum()) < (13 - 3) // 2 + (9 - 3) // 2  # rank 1 saved a part of its share

    mp.spawn(_rank, args=(2, _free_port(), str(llama_dir), str(out), 0), nprocs=2)
    got = nl.Stats.load(out)
    assert got.meta["world_size"] == 2 and got.meta["complete"] == ["en", "fr"]
    assert float((tmp_path / "s.safetensors.ppl").read_text()) == pytest.approx(ppl, rel=1e-12)
    got_responses, got_story, got_scores = torch.load(tmp_path / "s.safetensors.got")
    assert torch.equal(got_responses, responses) and got_story == story and torch.equal(got_scores, scores)
    assert torch.equal(nl.select.experts.load_responses(tmp_path / "s.safetensors.responses")[0], responses)
    for extra in ("ppl", "got", "responses", "from0"):  # no file "from1": rank 1 wrote nothing of its own
        (tmp_path / f"s.safetensors.{extra}").unlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.safetensors"]  # the rank checkpoints are gone
    _assert_equal(got, want)
    again = nl.record(model, tok, TEXTS, checkpoint=out, **SETTINGS)  # one process resumes a finished file
    _assert_equal(again, want)


def test_torchrun_record_writes_the_file_one_process_writes(llama_dir, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for g, lines in TEXTS.items():
        (corpus / f"{g}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = ["-m", str(llama_dir), "--text-dir", str(corpus), "--batch-size", "1", "--contexts", "--top-k", "3"]
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each rank
    try:
        assert CliRunner().invoke(app, ["record", *args, "--out", str(one)]).exit_code == 0
    finally:
        torch.set_num_threads(threads)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            str(_free_port()),
            "-m",
            "neuronlab",
            "record",
            *args,
            "--out",
            str(two),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("recorded by 2 processes") == 1  # rank 0 prints; rank 1 is quiet
    a, b = nl.Stats.load(one), nl.Stats.load(two)
    assert (a.meta["world_size"], b.meta["world_size"]) == (1, 2)
    _assert_equal(b, a)


def test_torchrun_finetune_trains_data_parallel(llama_dir, tmp_path):
    """The Trainer runs DDP over the launcher's ranks (gloo on CPUs): 2 ranks x 4 rows a step, one delta written."""
    import json

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{a}+{a}", "response": str(2 * a)}) + "\n" for a in range(16)))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            str(_free_port()),
            "-m",
            "neuronlab",
            "finetune",
            "-m",
            str(llama_dir),
            "--layers",
            "0-1",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "run"),
            "--max-steps",
            "3",
            "--batch-size",
            "4",
            "--template",
            "{query}=",
            "--save-steps",
            "3",
        ],
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("wrote ") == 1  # rank 0 writes the delta and says so
    state = json.loads((tmp_path / "run" / "trainer" / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["epoch"] == 1.5  # 3 steps x 2 ranks x 4 rows = 24 rows of 16: one process would be at 0.75
    assert nl.Delta.load(tmp_path / "run").meta["steps"] == 3


def test_expert_stats_of_two_ranks_equal_one_process_also_after_a_rank_is_killed(tiny_dir, tmp_path):
    import torch.multiprocessing as mp

    folder = tiny_dir("mixtral")
    model, tok = nl.load_model(folder)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        want = nl.record_experts(model, tok, TEXTS, batch_size=1, progress=False)
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "e.safetensors"
    with pytest.raises((mp.ProcessRaisedException, mp.ProcessExitedException)):
        mp.spawn(_rank, args=(2, _free_port(), str(folder), str(out), 4, True), nprocs=2)
    assert not out.exists() and (tmp_path / "e.rank1of2.safetensors").is_file()
    mp.spawn(_rank, args=(2, _free_port(), str(folder), str(out), 0, True), nprocs=2)
    got = nl.ExpertStats.load(out)
    assert got.meta["world_size"] == 2 and got.meta["complete"] == ["en", "fr"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.safetensors"]
    for key in ("tokens", "texts", "routed", "active"):
        assert torch.equal(getattr(got, key), getattr(want, key)), key
    for key in ("weight", "sum"):
        torch.testing.assert_close(getattr(got, key), getattr(want, key), rtol=1e-12, atol=1e-12)
