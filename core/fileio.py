"""Small file helpers shared by the data builders (corpus, paper datasets)."""

from __future__ import annotations

import hashlib


def file_sha256(path: str) -> str:
    """The sha256 hex digest of a file's bytes, read in chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
