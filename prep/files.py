"""Small file helpers shared by prep: atomic text writes and streaming sha256."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def tmp_name(path: Path) -> Path:
    """A per-process `*.tmp` name beside `path`, so concurrent writers of one file never collide."""
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


def write_text_atomic(path: Path, text: str) -> None:
    """Write `path` via a `*.tmp` file + rename, so a reader never sees half a file."""
    tmp = tmp_name(path)
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
