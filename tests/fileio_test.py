"""core.fileio: atomic writes leave either the old file or the whole new one, and no temp file on failure."""

import os

import pytest

from core import fileio


def test_atomic_path_renames_on_success_keeps_the_extension_and_cleans_up_on_failure(tmp_path):
    target = tmp_path / "sub" / "episode.gif"
    with fileio.atomic_path(str(target)) as tmp:
        assert tmp.endswith(".gif") and os.path.dirname(tmp) == str(target.parent)   # the writer sees .gif
        assert not target.exists()
        with open(tmp, "wb") as f:
            f.write(b"new")
    assert target.read_bytes() == b"new"
    with pytest.raises(RuntimeError, match="writer died"):
        with fileio.atomic_path(str(target)) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"half")
            raise RuntimeError("writer died")
    assert target.read_bytes() == b"new"                       # the old file, whole
    assert os.listdir(target.parent) == ["episode.gif"]        # no temp file left


def test_write_text_atomic_replaces_the_whole_file(tmp_path):
    path = str(tmp_path / "a.json")
    fileio.write_text_atomic(path, "first")
    fileio.write_text_atomic(path, "second")
    assert open(path).read() == "second" and os.listdir(tmp_path) == ["a.json"]
