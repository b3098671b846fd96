"""Small file helpers shared by prep: atomic text writes and streaming sha256."""

from __future__ import annotations

import hashlib
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> None:
    """Write `path` via `path.tmp` + rename, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
