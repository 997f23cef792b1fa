"""Read corpora: one text per line, from files or a folder of `GROUP.txt` files.

texts = read_text_dir("corpus/")                        # {"en": [...], "fr": [...]}
texts = read_text_dir("flores200_devtest/", pattern="*.devtest", limit=800)
texts = {"en": read_lines("en.txt")}
texts = {"en": DatasetTexts("en.jsonl", column="text")}      # streamed with `datasets`, never all in memory
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from neuronlab.errors import NeuronlabError


def read_lines(path: str | Path, limit: int | None = None, start: int = 0, keep_blank: bool = False) -> list[str]:
    """Stripped lines of a UTF-8 file (lines `start` .. `start + limit`), blank ones dropped unless `keep_blank`
    (which keeps line numbers aligned across parallel files); an error if no line has text."""
    path = Path(path)
    if not path.is_file():
        raise NeuronlabError(f"no text file at {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise NeuronlabError(f"{path} is not UTF-8 text: {err}") from err
    lines = lines[start:] if limit is None else lines[start : start + limit]
    texts = [line.strip() for line in lines if keep_blank or line.strip()]
    if not any(texts):
        raise NeuronlabError(f"{path} has no text (it is empty or blank in the lines asked for)")
    return texts


def read_text_dir(
    folder: str | Path, pattern: str = "*.txt", limit: int | None = None, start: int = 0
) -> dict[str, list[str]]:
    """{file stem: lines} for every file in `folder` matching `pattern`, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NeuronlabError(f"no folder at {folder}")
    files = sorted(folder.glob(pattern))
    if not files:
        raise NeuronlabError(f"no files matching {pattern!r} in {folder}: name them GROUP.txt or pass a pattern")
    return {f.name.split(".")[0]: read_lines(f, limit, start) for f in files}


def parse_group_files(specs: list[str]) -> dict[str, list[str]]:
    """Read `GROUP=FILE` pairs (the CLI's --text) into {group: lines}."""
    return {group: read_lines(path) for group, path in label_pairs(specs, "--text", "FILE", "fr=fr.txt").items()}


def read_groups(
    specs: Sequence[str] = (), folder: str | Path | None = None, pattern: str = "*.txt", limit: int | None = None
) -> dict[str, list[str]]:
    """texts = read_groups(["en=en.txt", "fr=fr.txt"], folder="more/", limit=100)

    {group: lines} from `GROUP=FILE` pairs and/or a folder of GROUP.txt files (the CLI's --text, --text-dir and
    --pattern), each cut to its first `limit` lines; a group given twice is an error."""
    found = parse_group_files(list(specs))
    if folder is not None:
        merge_groups(found, read_text_dir(folder, pattern))
    return found if limit is None else {g: lines[:limit] for g, lines in found.items()}


def label_pairs(specs: list[str], flag: str, what: str, example: str, label: str = "GROUP") -> dict[str, str]:
    """{label: value} of `LABEL=VALUE` options (--text, --dataset, --compare, --run), with one clear error for a
    malformed one or a label given twice."""
    out: dict[str, str] = {}
    for spec in specs:
        group, sep, value = spec.partition("=")
        if not sep or not group or not value:
            raise NeuronlabError(f"{flag} {spec!r}: write it as {label}={what}, e.g. {flag} {example}")
        merge_groups(out, {group: value})
    return out


def merge_groups(into: dict, more: dict) -> dict:
    """Add the groups of `more` to `into` (and return it); an error naming a group both give."""
    for group, texts in more.items():
        if group in into:
            raise NeuronlabError(f"group {group!r} is given twice")
        into[group] = texts
    return into


def read_jsonl(path: str | Path, what: str = "items") -> list[tuple[int, object]]:
    """(line number, value) for each non-blank line of a JSONL file; clear errors for a missing file, a line
    that is not JSON, and a file with no items."""
    path = Path(path)
    if not path.is_file():
        raise NeuronlabError(f"no {what} file at {path}")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append((n, json.loads(line)))
            except json.JSONDecodeError as err:
                raise NeuronlabError(f"{path}:{n} is not JSON ({err.msg}); write one JSON object per line") from None
    if not rows:
        raise NeuronlabError(f"{path} has no items: write one JSON object per line")
    return rows


def read_parallel(src: str | Path, ref: str | Path) -> tuple[list[str], list[str]]:
    """Line-aligned (source, reference) lines of two parallel files; a pair is dropped where either side is blank,
    so the two lists stay aligned. An error if the files have different numbers of lines."""
    a, b = read_lines(src, keep_blank=True), read_lines(ref, keep_blank=True)
    if len(a) != len(b):
        raise NeuronlabError(
            f"{src} and {ref} have different numbers of lines ({len(a)} vs {len(b)}): they must be line-aligned"
        )
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x and y]
    return [x for x, _ in pairs], [y for _, y in pairs]


_BUILDERS = {".txt": "text", ".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


class DatasetTexts:
    """One column of a Hugging Face `datasets` source, streamed: iterating reads the texts in order and never holds
    the corpus in memory, so `record` runs over corpora larger than RAM. The source is a local data file (.txt,
    .json/.jsonl, .csv, .parquet), a folder `load_dataset` understands, or a hub id (with `subset`, the config name).

        texts = {"en": DatasetTexts("wikimedia/wikipedia", subset="20231101.en", limit=100_000),
                 "fr": DatasetTexts("fr.jsonl", column="text")}
        stats = nl.record(model, tok, texts)
    """

    def __init__(
        self,
        source: str | Path,
        split: str = "train",
        column: str = "text",
        subset: str | None = None,
        limit: int | None = None,
    ):
        self.source, self.split, self.column, self.subset, self.limit = str(source), split, column, subset, limit

    def __repr__(self) -> str:
        return f"DatasetTexts({self.source!r}, split={self.split!r}, column={self.column!r})"

    def _open(self):
        try:
            from datasets import load_dataset
        except ImportError as err:
            raise NeuronlabError(
                f"reading {self.source} needs the `datasets` package ({err}): pip install 'neuronlab[datasets]'"
            ) from None
        path = Path(self.source)
        try:
            if path.is_file():
                builder = _BUILDERS.get(path.suffix.lower())
                if builder is None:
                    raise NeuronlabError(f"{path}: give a .txt, .json, .jsonl, .csv or .parquet file")
                return load_dataset(builder, data_files=str(path), split=self.split, streaming=True)
            return load_dataset(self.source, self.subset, split=self.split, streaming=True)
        except NeuronlabError:
            raise
        except Exception as err:  # datasets raises many kinds (not found, no such split, offline, ...)
            raise NeuronlabError(
                f"cannot open dataset {self.source!r} (split {self.split!r}): {type(err).__name__}: {err}"
            ) from None

    def __iter__(self):
        for i, row in enumerate(self._open()):
            if self.limit is not None and i >= self.limit:
                return
            if self.column not in row:
                raise NeuronlabError(
                    f"dataset {self.source!r} has no column {self.column!r}: its columns are "
                    f"{', '.join(row)}; pass column=... (--column)"
                )
            yield row[self.column]


def parse_group_datasets(specs: list[str], split: str, column: str, subset: str | None, limit: int | None):
    """`GROUP=SOURCE` pairs (the CLI's --dataset) into {group: DatasetTexts}."""
    pairs = label_pairs(specs, "--dataset", "SOURCE", "fr=fr.jsonl")
    return {group: DatasetTexts(source, split, column, subset, limit) for group, source in pairs.items()}
