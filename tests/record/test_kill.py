"""A record killed with SIGKILL mid-run (the one process, or one rank of two under torchrun) resumes, through the
command line's --resume, to statistics equal to a run never killed (issue 33: faults tried on purpose)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import neuronlab as nl
from neuronlab.data.corpora import read_text_dir
from neuronlab.dist import rank_files

from .test_distributed import SETTINGS, TEXTS, _assert_equal, _free_port

pytestmark = pytest.mark.slow
FLAGS = ["--batch-size", "1", "--bucket", "2", "--pooled-texts", "3", "--contexts", "--top-k", "5"]  # = SETTINGS

# Records like `neuronlab record` with FLAGS, but its process (under torchrun: rank 1) stops in its STALL-th forward
# pass (WHERE=forward) or in the first checkpoint write after it, the new file written but not yet renamed into place
# (WHERE=write): it writes its pid to MARKER and sleeps there until the test kills it.
RUN = """
import os, sys, time
from pathlib import Path
import torch
import neuronlab as nl
import neuronlab.io
from neuronlab.data.corpora import read_text_dir
from neuronlab.dist import init_from_env, world

model_dir, corpus, out, stall, where, marker = sys.argv[1:]
torch.set_num_threads(1)
init_from_env()
model, tok = nl.load_model(model_dir)
calls, replace = [], os.replace

def stop():
    if len(calls) >= int(stall) and world()[0] == world()[1] - 1:
        Path(marker).write_text(str(os.getpid()))
        time.sleep(600)

def forward(_module, _args):
    calls.append(1)
    if where == "forward":
        stop()

def rename(tmp, path):
    if where == "write":
        stop()
    replace(tmp, path)

model.register_forward_pre_hook(forward)
neuronlab.io.os.replace = rename
settings = dict(batch_size=1, bucket=2, pooled_texts=3, contexts=True, top_k=5, checkpoint_every=0)
nl.record(model, tok, read_text_dir(corpus, "*.txt"), checkpoint=out, progress=False, **settings)
"""


def _corpus(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for g, lines in TEXTS.items():
        (corpus / f"{g}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return corpus


def _uninterrupted(model_dir: Path, corpus: Path):
    model, tok = nl.load_model(model_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the processes: another thread count changes float32 matmul rounding
    try:
        return nl.record(model, tok, read_text_dir(corpus, "*.txt"), **SETTINGS)
    finally:
        torch.set_num_threads(threads)


def _kill_when_stalled(launch: list[str], marker: Path, ready) -> subprocess.Popen:
    """Start `launch`, wait until its process writes `marker` and `ready()` holds, then SIGKILL that process."""
    run = subprocess.Popen(launch, env=dict(os.environ, OMP_NUM_THREADS="1"), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (marker.exists() and marker.read_text() and ready()):
        assert run.poll() is None, f"the run ended before it was killed:\n{run.stderr.read()[-3000:]}"  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the run never reached the point to kill it"
        time.sleep(0.05)
    os.kill(int(marker.read_text()), signal.SIGKILL)
    run.communicate(timeout=120)
    return run


def _resume(launch: list[str], model_dir: Path, corpus: Path, out: Path) -> None:
    args = ["-m", "neuronlab", "record", "-m", str(model_dir), "--text-dir", str(corpus), *FLAGS, "--out", str(out)]
    run = subprocess.run(
        [*launch, *args, "--resume"], env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-3000:]


@pytest.mark.parametrize("where", ["forward", "write"])
def test_a_record_killed_mid_run_resumes_to_the_uninterrupted_statistics(where, tiny_dir, tmp_path):
    model_dir, corpus, out = tiny_dir("llama"), _corpus(tmp_path), tmp_path / "s.safetensors"
    (tmp_path / "run.py").write_text(RUN)
    marker = tmp_path / "pid"
    stall = len(TEXTS["en"]) + 5  # in (after) the 5th forward of fr: en done, fr checkpointed on the way

    def partway() -> bool:
        return out.exists() and 0 < int(nl.Stats.load(out).texts[1]) < len(TEXTS["fr"])

    script = [str(tmp_path / "run.py"), str(model_dir), str(corpus), str(out), str(stall), where, str(marker)]
    killed = _kill_when_stalled([sys.executable, *script], marker, partway)
    assert killed.returncode == -signal.SIGKILL
    partial = nl.Stats.load(out)  # the last checkpoint renamed into place, whole
    assert partial.meta["complete"] == ["en"] and 0 < int(partial.texts[1]) < 6  # a part of fr, then killed
    temps = [p.name for p in tmp_path.glob(".s.safetensors.*.tmp")]
    assert len(temps) == (where == "write")  # a kill inside a write leaves its new file, never renamed

    _resume([sys.executable], model_dir, corpus, out)
    _assert_equal(nl.Stats.load(out), _uninterrupted(model_dir, corpus))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "pid", "run.py", "s.safetensors"]  # temp gone


def test_a_rank_killed_mid_run_resumes_with_two_ranks_to_the_uninterrupted_statistics(tiny_dir, tmp_path):
    model_dir, corpus, out = tiny_dir("llama"), _corpus(tmp_path), tmp_path / "s.safetensors"
    (tmp_path / "run.py").write_text(RUN)
    marker, mine = tmp_path / "pid", tmp_path / "s.rank1of2.safetensors"
    share = [(len(lines) - 3 + 1) // 2 for lines in TEXTS.values()]  # rank 1's texts: 5 of en, 3 of fr
    stall = share[0] + 3  # in rank 1's 3rd forward of fr: en done, fr checkpointed after 2 texts

    def partway() -> bool:
        return mine.exists() and int(nl.Stats.load(mine).texts[1]) == 2

    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port"]
    script = [str(tmp_path / "run.py"), str(model_dir), str(corpus), str(out), str(stall), "forward", str(marker)]
    killed = _kill_when_stalled([*torchrun, str(_free_port()), *script], marker, partway)
    assert killed.returncode != 0 and not out.exists()  # torchrun stops rank 0 too; nothing combined was written
    assert [p.name for p in rank_files(out)] == ["s.rank0of2.safetensors", "s.rank1of2.safetensors"]
    partial = nl.Stats.load(mine)
    assert partial.meta["complete"] == ["en"] and partial.texts.tolist() == [share[0], 2]

    _resume([*torchrun, str(_free_port())], model_dir, corpus, out)
    got = nl.Stats.load(out)
    assert got.meta["world_size"] == 2 and not rank_files(out)  # the rank checkpoints are gone
    _assert_equal(got, _uninterrupted(model_dir, corpus))
