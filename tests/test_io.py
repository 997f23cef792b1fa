"""Atomic writes and output paths that cannot be written."""

import os
import stat

import pytest
from typer.testing import CliRunner

import neuronlab as nl
from neuronlab.cli import app
from neuronlab.io import check_writable, write_text

from .conftest import TEXTS, tiny_model


def test_atomic_write_leaves_usual_permissions_without_touching_the_umask(tmp_path, monkeypatch):
    def no_umask(_mask):
        raise AssertionError("os.umask changes process state: unsafe with threads")

    umask = os.umask(0o022)
    os.umask(umask)
    monkeypatch.setattr(os, "umask", no_umask)
    write_text(tmp_path / "a" / "f.txt", "hello")
    assert (tmp_path / "a" / "f.txt").read_text() == "hello"
    assert stat.S_IMODE((tmp_path / "a" / "f.txt").stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["f.txt"]  # no temporary file left


def test_unwritable_outputs_fail_before_any_work(tmp_path):
    with pytest.raises(nl.NeuronlabError, match=r"cannot write /proc/x/s\.safetensors"):
        check_writable("/proc/x/s.safetensors")
    with pytest.raises(nl.NeuronlabError, match="is a folder"):
        check_writable(tmp_path)
    check_writable(tmp_path / "new" / "f.json")  # a missing folder is made
    model = tiny_model("gpt2")
    with pytest.raises(nl.NeuronlabError, match="cannot write"):
        nl.record(model, None, TEXTS, checkpoint="/proc/x/s.safetensors", progress=False)  # the tokenizer is never used


@pytest.mark.parametrize(
    "args",
    [
        ["record", "-m", "nowhere", "--text", "en=x.txt", "--out", "/proc/x/s.safetensors"],
        ["find", "lape", "--stats", "s.safetensors", "--out", "/proc/x/n.json"],
        ["scale", "task", "pronoun", "--out", "/proc/x/t.jsonl"],
        ["scale", "train", "-m", "nowhere", "--task", "t.jsonl", "--out", "/proc/x/run"],
        ["lens", "-m", "nowhere", "--prompt", "a", "--out", "/proc/x/l.json"],
        ["eval", "perplexity", "-m", "nowhere", "--out", "/proc/x/p.json"],
        ["demo", "--out", "/proc/x/demo"],
        ["report", "results.json", "--out", "/proc/x/r.html"],
    ],
)
def test_every_writing_command_checks_its_output_first(args):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "cannot write /proc/x" in result.output, result.output
    assert "Traceback" not in result.output
