"""Faults tried on purpose (issue 33). A full disk or an unwritable folder during every artifact write leaves the
earlier artifact byte for byte, no temporary file beside it, and one clear error; a truncated or corrupt .gguf, a
safetensors file with a wrong header, a plan naming a file outside its folder or an unknown kind, and a result of
another model each fail with one clear error and overwrite nothing. Records killed mid-run: record/test_kill.py."""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import signal
import struct
import subprocess
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import neuronlab as nl
from neuronlab.analyze.arithmetic import save_vector
from neuronlab.cli import app
from neuronlab.data.concepts import write_concepts
from neuronlab.data.contrast import write_contrast
from neuronlab.intervene.plan import Add, Plan, Scale
from neuronlab.io import atomic_folder, write_bytes, write_json, write_text
from neuronlab.learn.finetune import Delta
from neuronlab.learn.methods import LearnedIntervention
from neuronlab.models.load import model_info
from neuronlab.record.stats import Stats
from neuronlab.report.html import Report
from neuronlab.select.attribution import Attribution
from neuronlab.select.experts import Expertise
from neuronlab.select.layers import LayerSelection

from .conftest import TEXTS, save_tiny, tiny_model

LIMIT = 64  # bytes a file may reach on the "full disk": every artifact below is larger


@contextmanager
def full_disk(limit: int = LIMIT):
    """Writes past `limit` bytes of any file fail with EFBIG as on a full disk, also in the Rust safetensors writer
    (RLIMIT_FSIZE; SIGXFSZ ignored, so the write fails instead of the process dying)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


@contextmanager
def unwritable(folder: Path):
    """`folder` cannot take new entries: `chattr +i` as root (root ignores permission bits), mode 0555 otherwise."""
    if os.geteuid() == 0:
        if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
            pytest.skip("running as root and `chattr +i` does not work on this file system: no folder is unwritable")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        mode = folder.stat().st_mode
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(mode)


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every entry under `folder` (relative path -> bytes, None for a folder): temporary files show up too."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


def _model_folder(out: Path, v: int) -> None:
    """A Hugging Face checkpoint folder, as `neuronlab merge` and `models convert` write it."""
    model = tiny_model("gpt2", seed=v)
    atomic_folder(out, lambda tmp: model.save_pretrained(tmp))


def _items(v: int) -> list[dict]:
    return [{"prompt": f"item {i} of {v}", "target": " he", "foil": " she", "group": "m"} for i in range(4)]


def _concepts(v: int) -> dict[str, dict]:
    return {"cat": {"positive": [f"a cat {i}" for i in range(v + 3)], "negative": ["a dog", "a car"]}}


# artifact writer -> (where it writes, relative to its folder; write version v there)
WRITERS: dict[str, tuple[str, Callable[[Path, int], None]]] = {
    "Stats.save": ("s.safetensors", lambda p, v: Stats.empty(["en", "fr"], 2, 8, {"v": v}).save(p)),
    "NeuronSet.save": ("n.json", lambda p, v: nl.NeuronSet({"en": {0: list(range(v, v + 40))}}, {"v": v}).save(p)),
    "Plan.save": (
        "plan.json",  # and plan.safetensors beside it: both, or neither
        lambda p, v: Plan([Add(value=torch.full((8,), float(v)), site="ffn_out", layers=[0]), Scale(factor=v)]).save(p),
    ),
    "LayerSelection.save": ("layers.json", lambda p, v: LayerSelection([0, v], [0.5, float(v)], {}, {"v": v}).save(p)),
    "Expertise.save": ("e.safetensors", lambda p, v: Expertise(["cat"], {"ap": torch.full((1, 2, 8), v)}).save(p)),
    "LearnedIntervention.save": (
        "scalars.safetensors",
        lambda p, v: LearnedIntervention("activscalar", {"layers.0.ffn_out": torch.full((4,), float(v))}).save(p),
    ),
    "Delta.save": (  # two files in a folder of its own (the one `unwritable` locks): both, or neither
        "delta",
        lambda p, v: Delta({"w": torch.full((8, 8), float(v))}, {"v": v}).save(p),
    ),
    "Attribution.save": (
        "attr.safetensors",
        lambda p, v: Attribution(["en"], torch.full((1, 2, 8), v, dtype=torch.float64), torch.tensor([3])).save(p),
    ),
    "save_vector": ("v.safetensors", lambda p, v: save_vector(p, torch.full((16,), float(v)), {"v": v})),
    "write_json": ("r.json", lambda p, v: write_json(p, {"values": list(range(v, v + 30))})),
    "write_text": ("t.txt", lambda p, v: write_text(p, f"version {v}\n" * 20)),
    "write_bytes": ("b.png", lambda p, v: write_bytes(p, bytes([v]) * 200)),
    "Report.save": ("report.html", lambda p, v: Report(f"report {v}").save(p)),
    "write_concepts": ("concepts.jsonl", lambda p, v: write_concepts(p, _concepts(v))),
    "write_contrast": ("task.jsonl", lambda p, v: write_contrast(p, _items(v))),
    "atomic_folder (merge, models convert)": ("merged", _model_folder),
}


@pytest.mark.parametrize("fault", ["full disk", "unwritable folder"])
@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_failed_artifact_write_leaves_the_earlier_artifact_and_one_clear_error(writer, fault, tmp_path):
    name, write = WRITERS[writer]
    folder = tmp_path / "out"
    folder.mkdir()
    write(folder / name, 1)
    before = snapshot(folder)
    with (
        pytest.raises(nl.NeuronlabError, match=f"cannot write {folder}/") as err,
        full_disk() if fault == "full disk" else unwritable(folder / name if writer == "Delta.save" else folder),
    ):
        write(folder / name, 2)
    assert snapshot(folder) == before  # the earlier artifact, byte for byte, and nothing beside it
    fix = "free disk space" if fault == "full disk" else "a folder you can write to"
    assert fix in str(err.value) and "is unchanged" in str(err.value), err.value
    write(folder / name, 2)  # with the fault gone, the write goes through
    assert snapshot(folder) != before


def test_a_plan_is_saved_whole_or_not_at_all(tmp_path):
    """Plan.save writes plan.safetensors, then plan.json naming it: a disk that fills between the two used to leave
    the new tensors under the old JSON (an earlier plan that no longer loads as it was)."""
    _, write = WRITERS["Plan.save"]
    write(tmp_path / "new.json", 2)
    tensors, data = (tmp_path / "new.safetensors").stat().st_size, (tmp_path / "new.json").stat().st_size
    assert tensors < 200 < data  # the tensors fit under the limit, the JSON does not
    for p in tmp_path.iterdir():
        p.unlink()
    write(tmp_path / "plan.json", 1)
    before = snapshot(tmp_path)
    with pytest.raises(nl.NeuronlabError, match=r"cannot write .*plan\.json"), full_disk(200):
        write(tmp_path / "plan.json", 2)
    assert snapshot(tmp_path) == before
    assert float(Plan.load(tmp_path / "plan.json").interventions[0].value[0]) == 1.0


def test_resuming_removes_only_the_temporary_files_of_its_own_checkpoint(tmp_path):
    """What `record` does before it resumes (the kill itself: record/test_kill.py)."""
    from neuronlab.io import remove_temps

    names = [".s.safetensors.0123456789ab.tmp", ".s.safetensors.notes.tmp", ".t.safetensors.0123456789ab.tmp", "x"]
    for name in names:
        (tmp_path / name).write_text("")
    assert remove_temps(tmp_path / "s.safetensors") == [names[0]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[1:])


def _one_error_line(result, *needles: str) -> str:
    out = result.output
    assert result.exit_code == 2, out
    lines = [line for line in out.splitlines() if line.startswith("error:")]
    assert "Traceback" not in out and len(lines) == 1, out
    assert all(n in lines[0] for n in needles), lines[0]
    return lines[0]


def test_the_cli_reports_a_full_disk_in_one_line_and_keeps_the_earlier_files(tmp_path, model_dir):
    runner = CliRunner()
    stats, neurons = tmp_path / "s.safetensors", tmp_path / "n.json"
    nl.record(*nl.load_model(model_dir), TEXTS, progress=False).save(stats)
    assert runner.invoke(app, ["find", "lape", "--stats", str(stats), "--out", str(neurons)]).exit_code == 0
    before = snapshot(tmp_path)
    with full_disk():
        result = runner.invoke(app, ["find", "lape", "--stats", str(stats), "--out", str(neurons), "--top-rate", ".1"])
    _one_error_line(result, f"cannot write {neurons}", "free disk space")
    assert snapshot(tmp_path) == before


def test_an_os_error_elsewhere_is_one_error_line_too(tmp_path, monkeypatch):
    """A read that fails in the operating system (here a disk I/O error) used to end in a traceback and exit 1."""

    def broken(path, *args, **kwargs):
        raise OSError(errno.EIO, "Input/output error", str(path))

    monkeypatch.setattr("neuronlab.data.corpora.read_lines", broken)
    text = tmp_path / "en.txt"
    text.write_text("hello\n")
    result = CliRunner().invoke(app, ["record", "-m", "m", "--text", f"en={text}", "--out", str(tmp_path / "s")])
    _one_error_line(result, f"error: {text}: Input/output error", "permissions and free disk space")


def test_merge_writes_its_checkpoint_whole_or_leaves_the_earlier_one(tmp_path, model_dir):
    """`neuronlab merge` used to save_pretrained straight into --out: a full disk left a mix of two checkpoints."""
    model, _ = nl.load_model(model_dir)
    name, p = next((n, p) for n, p in model.named_parameters() if p.dim() == 2 and "mlp" in n)
    for v in (1, 2):
        Delta({name: p.detach() + 0.01 * v}, {"base": model_info(model)}).save(tmp_path / f"delta{v}")
    runner = CliRunner()
    merged = tmp_path / "merged"
    args = ["merge", "-m", str(model_dir), "--out", str(merged), "--delta"]
    assert runner.invoke(app, [*args, str(tmp_path / "delta1")]).exit_code == 0
    before = snapshot(tmp_path)
    with full_disk():
        result = runner.invoke(app, [*args, str(tmp_path / "delta2")])
    _one_error_line(result, f"cannot write {merged}", "free disk space")
    assert snapshot(tmp_path) == before
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    refused = runner.invoke(app, [*args, str(tmp_path / "delta2"), "--out", str(tmp_path / "notes")])
    _one_error_line(refused, "holds files but no checkpoint")
    assert runner.invoke(app, [*args, str(tmp_path / "delta2")]).exit_code == 0  # replaces the earlier checkpoint
    assert nl.load_model(merged)[0].state_dict()[name].sub(p.detach() + 0.02).abs().max() < 1e-6


# ---------------------------------------------------------------- damaged inputs, results of another model


def _gguf(path: Path) -> bytes:
    """A small well-formed GGUF file (header, metadata, one tensor)."""
    import numpy as np

    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_embedding_length(8)
    writer.add_tensor("token_embd.weight", np.ones((64, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[: len(b) // 2], "is truncated or damaged"),  # a download cut short
        (lambda b: b[:4] + b"\xff" * 8 + b[12:], "is truncated or damaged"),  # a version no reader handles
        (lambda b: b"PK\x03\x04" + b[4:], "is not a GGUF file"),  # another kind of file
    ],
    ids=["truncated", "corrupt header", "not gguf"],
)
def test_a_damaged_gguf_fails_with_one_clear_error_and_writes_nothing(damage, message, tmp_path, monkeypatch):
    monkeypatch.setenv("NEURONLAB_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "m.gguf"
    path.write_bytes(damage(_gguf(path)))
    with pytest.raises(nl.NeuronlabError, match=message) as err:
        nl.load_model(path)
    assert str(path) in str(err.value) and ("download" in str(err.value) or "give a .gguf" in str(err.value))
    result = CliRunner().invoke(app, ["models", "convert", str(path), "--out", str(tmp_path / "o")])
    _one_error_line(result, str(path), message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf", "o"]  # no cache entry (`o` from the check)
    assert not any((tmp_path / "o").iterdir())  # --out was checked (made) before the work, and nothing went in


def _bad_headers(good: bytes) -> dict[str, bytes]:
    n = struct.unpack("<Q", good[:8])[0]
    return {
        "header length past the end": struct.pack("<Q", len(good) * 10) + good[8:],
        "header not JSON": good[:8] + b"{" + b"x" * (n - 1) + good[8 + n :],
        "tensors cut short": good[: 8 + n + 10],
        "empty file": b"",
    }


@pytest.mark.parametrize("where", ["find lape --stats", "layers --stats", "plan tensors", "--neurons"])
def test_a_safetensors_file_with_a_wrong_header_fails_with_one_clear_error(where, tmp_path, model_dir):
    stats = tmp_path / "s.safetensors"
    Stats.empty(["en", "fr"], 3, 64, {}).save(stats)
    for label, data in _bad_headers(stats.read_bytes()).items():
        bad = tmp_path / "bad.safetensors"
        bad.write_bytes(data)
        out = tmp_path / "out.json"
        out.write_text("earlier")
        if where == "plan tensors":  # a plan whose tensors file is damaged
            Plan([Add(value=torch.ones(64), layers=[0])]).save(tmp_path / "bad.json")
            bad.write_bytes(data)
            with pytest.raises(nl.NeuronlabError, match=r"is not a safetensors file .*write it again"):
                Plan.load(tmp_path / "bad.json")
            continue
        if where == "--neurons":
            args = ["eval", "generate", "-m", str(model_dir), "--neurons", str(bad), "--prompt", "a"]
        else:
            args = [*where.split(), str(bad), "--out", str(out)]
        line = _one_error_line(CliRunner().invoke(app, args), str(bad))
        assert "safetensors" in line or "not JSON" in line, (label, line)
        assert out.read_text() == "earlier", label


def test_a_plan_naming_a_file_outside_its_folder_or_an_unknown_kind_is_refused(tmp_path):
    Plan([Add(value=torch.ones(8), site="ffn_out", layers=[0])]).save(tmp_path / "plan.json")
    data = json.loads((tmp_path / "plan.json").read_text())
    (tmp_path / "sub").mkdir()
    for name in ("../plan.safetensors", str(tmp_path / "plan.safetensors"), "sub/../../plan.safetensors"):
        (tmp_path / "sub" / "p.json").write_text(json.dumps({**data, "tensors": name}))
        with pytest.raises(nl.NeuronlabError, match="not a file beside it"):
            Plan.load(tmp_path / "sub" / "p.json")
    data["interventions"][0]["kind"] = "Ad"
    (tmp_path / "plan.json").write_text(json.dumps(data))
    with pytest.raises(nl.NeuronlabError, match=r"unknown intervention kind 'Ad' \(did you mean 'Add'\?\)"):
        Plan.load(tmp_path / "plan.json")
    _one_error_line(CliRunner().invoke(app, ["inspect", str(tmp_path / "plan.json")]), "unknown intervention kind")


def test_results_of_another_model_with_the_same_shapes_are_refused(tmp_path):
    """Two tiny llamas of one shape, other weights: only the fingerprint tells them apart."""
    a, b = save_tiny(tmp_path / "a", "llama", 0), save_tiny(tmp_path / "b", "llama", 1)
    model_a, tok = nl.load_model(a)
    model_b, _ = nl.load_model(b)
    stats = nl.record(model_a, tok, TEXTS, pooled_texts=3, progress=False)
    stats.save(tmp_path / "s.safetensors")
    neurons = nl.lape(stats)
    neurons.save(tmp_path / "n.json")
    plan = nl.steering_plan(neurons, "fr", "p_max", stats)
    with pytest.raises(nl.NeuronlabError, match="made on another model"), nl.apply(model_b, plan):
        pass  # the plan of model a applied to model b: refused before any hook goes in
    with pytest.raises(nl.NeuronlabError, match="made on another model"):
        nl.bake(model_b, Plan([Scale(factor=2.0, neurons=neurons)]))
    with nl.apply(model_a, plan):  # on its own model it applies
        pass
    with torch.no_grad():  # a weight changed in place (a merge, a bake): the kept fingerprint is computed again
        model_a.model.layers[1].mlp.down_proj.weight.mul_(1.5)
    with pytest.raises(nl.NeuronlabError, match="ffn weights of layer 1 differ"), nl.apply(model_a, plan):
        pass
    runner, text = CliRunner(), tmp_path / "fr.txt"
    text.write_text("le chat\nbonjour le monde\n")
    steer = ["--neurons", str(tmp_path / "n.json"), "--stats", str(tmp_path / "s.safetensors")]
    _one_error_line(runner.invoke(app, ["eval", "generate", "-m", str(b), *steer, "--prompt", "a"]), "another model")
    before = snapshot(tmp_path)
    resume = ["record", "-m", str(b), "--text", f"fr={text}", "--out", str(tmp_path / "s.safetensors"), "--resume"]
    _one_error_line(runner.invoke(app, resume), "another model")
    assert snapshot(tmp_path) == before  # the stats of model a are not overwritten
