"""House rules that a test can hold: small source files that read top to bottom."""

from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "neuronlab"


def test_no_source_file_over_350_lines():
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 350}
    assert not long, f"split these files (house rule: at most 350 lines): {long}"
