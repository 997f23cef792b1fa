import pytest

import neuronlab as nl
from neuronlab.data.corpora import parse_group_files, read_lines, read_text_dir


def test_read_lines_and_folders(tmp_path):
    (tmp_path / "en.txt").write_text("one\n\n  two  \nthree\n", encoding="utf-8")
    (tmp_path / "fr.txt").write_text("un\ndeux\n", encoding="utf-8")
    assert read_lines(tmp_path / "en.txt") == ["one", "two", "three"]
    assert read_lines(tmp_path / "en.txt", keep_blank=True) == ["one", "", "two", "three"]  # aligned line numbers
    assert read_lines(tmp_path / "en.txt", limit=2, start=1) == ["two"]
    assert read_text_dir(tmp_path) == {"en": ["one", "two", "three"], "fr": ["un", "deux"]}
    assert parse_group_files([f"x={tmp_path / 'fr.txt'}"]) == {"x": ["un", "deux"]}
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(nl.NeuronlabError, match="has no text"):
        read_lines(tmp_path / "empty.txt", keep_blank=True)
    with pytest.raises(nl.NeuronlabError, match="no files matching"):
        read_text_dir(tmp_path, "*.devtest")
    with pytest.raises(nl.NeuronlabError, match="given twice"):
        parse_group_files([f"x={tmp_path / 'fr.txt'}", f"x={tmp_path / 'en.txt'}"])


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    import os

    from neuronlab.io import write_json

    write_json(tmp_path / "x.json", {"a": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temporary file left behind
