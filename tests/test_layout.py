"""The package's layers hold (docs/layout.md): no import runs from a lower package to a higher one (function-level
imports and `importlib` names included), no two modules import each other round a circle, and a CLI module imports
only the library's public names (`neuronlab.__all__`) and the CLI's own helpers, so each command is a call into the
library, not library work of its own."""

import ast
import re
from pathlib import Path

import neuronlab

ROOT = Path(neuronlab.__file__).parent
DOCS = Path(__file__).resolve().parents[1] / "docs" / "layout.md"
TOP = {"__init__", "__main__", "testing"}


def _tiers() -> dict[str, int]:
    line = next(x for x in DOCS.read_text().splitlines() if x.strip().startswith("layers:"))
    steps = line.split(":", 1)[1].split("<")
    return {name.strip(): i for i, step in enumerate(steps) for name in step.split(",")}


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(("neuronlab", *parts)).removesuffix(".__init__")
        found[name] = path
    return found


def _imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import in the file, at any depth."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            out.append((base, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", "") == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            out.append((node.args[0].value, [], node.lineno))
    return [(m, names, line) for m, names, line in out if m == "neuronlab" or m.startswith("neuronlab.")]


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_import_runs_from_a_lower_package_to_a_higher_one():
    tiers = _tiers()
    packages = {_package(m) for m in _modules()} - TOP
    assert packages <= set(tiers), f"packages missing from the layers line of docs/layout.md: {packages - set(tiers)}"
    wrong = []
    for name, path in _modules().items():
        here = _package(name)
        if here in TOP:
            continue
        for target, _, line in _imports(name, path):
            there = _package(target)
            if there != here and (there in TOP or tiers[there] >= tiers[here]):
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({here}) imports {target} ({there})")
    assert not wrong, "imports that run up (or across) the layers:\n" + "\n".join(wrong)


def test_no_import_circle():
    modules = _modules()
    graph = {m: set() for m in modules}
    for name, path in modules.items():
        for target, names, _ in _imports(name, path):
            for t in [target, *(f"{target}.{n}" for n in names)]:
                if t in modules and t != name and t != "neuronlab":
                    graph[name].add(t)
    seen, on_path, circles = set(), [], []

    def visit(m):
        if m in on_path:
            circles.append(" -> ".join([*on_path[on_path.index(m) :], m]))
            return
        if m in seen:
            return
        seen.add(m)
        on_path.append(m)
        for t in sorted(graph[m]):
            visit(t)
        on_path.pop()

    for m in sorted(graph):
        visit(m)
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_a_cli_module_imports_only_public_names_and_cli_helpers():
    public = set(neuronlab.__all__)
    wrong = []
    for name, path in _modules().items():
        if not name.startswith("neuronlab.cli"):
            continue
        for target, names, line in _imports(name, path):
            if target.startswith("neuronlab.cli"):
                continue
            private = [n for n in names if n not in public] or ([] if names else [target])
            if private:
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {target} {', '.join(private)}")
    assert not wrong, "CLI imports of library internals (export them from neuronlab, or do the work there):\n" + (
        "\n".join(wrong)
    )


def test_the_layers_line_names_real_packages():
    assert re.search(r"^\s+layers: errors < ", DOCS.read_text(), re.M)
    tiers = _tiers()
    for name in tiers:
        assert name == "study" or (ROOT / name).is_dir() or (ROOT / f"{name}.py").is_file(), name
