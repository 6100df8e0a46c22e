"""Small file helpers shared by the data builders (corpus, paper datasets) and the trainer."""

from __future__ import annotations

import hashlib
import os


def file_sha256(path: str) -> str:
    """The sha256 hex digest of a file's bytes, read in chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_text_atomic(path: str, text: str) -> None:
    """Writes text through a per-process temp file and a rename: a reader never sees half a file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
