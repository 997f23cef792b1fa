"""The README and docs/ say what the code does: every `neuronlab ...` command in their fenced blocks names a real
subcommand and real options, and the README's Python tour runs (on a tiny model instead of the hub's)."""

import re
import shlex
from pathlib import Path

import pytest
import typer.main

import neuronlab as nl
from neuronlab.cli import app

from .conftest import tiny_model

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)


def blocks(page: Path, lang: str):
    return [body for kind, body in FENCE.findall(page.read_text(encoding="utf-8")) if kind == lang]


def commands(page: Path) -> list[list[str]]:
    """The `neuronlab ...` command lines of a page's bash blocks (continuations joined, comments and
    `$(...)` substitutions dropped), as argument lists after `neuronlab`."""
    found = []
    for body in blocks(page, "bash"):
        for line in body.replace("\\\n", " ").splitlines():
            lex = shlex.shlex(re.sub(r"\$\([^)]*\)", "X", line), posix=True, punctuation_chars=True)
            lex.whitespace_split, lex.commenters = True, "#"
            words = list(lex)
            for i, w in enumerate(words):
                if w == "neuronlab" and (i == 0 or words[i - 1] in ("-m", "&&", "|", ";")):
                    end = next((j for j in range(i + 1, len(words)) if words[j] in ("&&", "|", ";", ">")), len(words))
                    found.append(words[i + 1 : end])
    return found


def resolve(args: list[str]):
    """(the click command the arguments name, the option words they pass)."""
    cmd = typer.main.get_command(app)
    rest = list(args)
    while hasattr(cmd, "commands") and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        assert name in cmd.commands, f"no subcommand {name!r} (have {sorted(cmd.commands)})"
        cmd = cmd.commands[name]
    assert not hasattr(cmd, "commands"), f"{args}: names a command group, not a command"
    return cmd, [w.split("=")[0] for w in rest if w.startswith("--")]


def test_the_pages_have_commands():
    assert sum(len(commands(p)) for p in PAGES) >= 30
    assert ["demo", "--out", "demo-out"] in commands(ROOT / "README.md")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_names_a_real_subcommand_and_options(page):
    for args in commands(page):
        cmd, options = resolve(args)
        known = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}
        unknown = [o for o in options if o not in known]
        assert not unknown, f"{page.name}: `neuronlab {' '.join(args)}`: {unknown} are not options of it"


def test_every_subcommand_on_the_pages_answers_help():
    from typer.testing import CliRunner

    named = {tuple(w for w in args if not w.startswith("-"))[:2] for p in PAGES for args in commands(p)}
    runner = CliRunner()
    for path in sorted(named):
        cmd = typer.main.get_command(app)
        words = []
        for w in path:
            if not hasattr(cmd, "commands") or w not in cmd.commands:
                break
            cmd, words = cmd.commands[w], [*words, w]
        result = runner.invoke(app, [*words, "--help"])
        assert result.exit_code == 0, (words, result.output)


def test_the_readme_tour_runs(monkeypatch, tok, tmp_path):
    (tour,) = blocks(ROOT / "README.md", "python")
    model = tiny_model("gpt_neox")
    monkeypatch.setattr(nl, "load_model", lambda *a, **k: (model, tok))
    monkeypatch.chdir(tmp_path)
    exec(compile(tour, "README.md", "exec"), {})
    assert (tmp_path / "no-fr" / "config.json").exists()


def test_the_readme_is_an_entry_page():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150, "the README is an entry page: move detail into docs/"
    links = re.findall(r"\]\(([^)#]+)", "\n".join(p.read_text(encoding="utf-8") for p in PAGES))
    missing = [
        link
        for link in links
        if not link.startswith("http") and not any((page.parent / link).exists() for page in PAGES)
    ]
    assert not missing, f"links to files that are not in the repository: {missing}"
