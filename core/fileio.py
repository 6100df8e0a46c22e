"""Small file helpers shared by the data builders (corpus, paper datasets) and the trainer."""

from __future__ import annotations

import contextlib
import hashlib
import os
from typing import Iterator


def file_sha256(path: str) -> str:
    """The sha256 hex digest of a file's bytes, read in chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yields a per-process temp path beside `path` (same extension, for writers that pick a format from it);
    once the block ends without an error the file is renamed onto `path`, else removed: a reader never sees
    half a file, and a failed write leaves no temp file behind."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp-{os.getpid()}{ext}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomic(path: str, text: str) -> None:
    """Writes text through a per-process temp file and a rename: a reader never sees half a file."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
