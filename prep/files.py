"""Small file helpers shared by prep: atomic text writes, streaming sha256, directory locks."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
from collections.abc import Iterator
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


LOCK_NAME = ".ucf3d.lock"


@contextlib.contextmanager
def locked_dir(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on directory `path` (fcntl.flock on `path/.ucf3d.lock`) while the
    block runs; if another process holds it, fail at once saying which (pid, host, command).

    The lock dies with its holder (the kernel drops it), so a killed run never leaves it stuck.
    """
    path.mkdir(parents=True, exist_ok=True)
    lock = path / LOCK_NAME
    with open(lock, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise RuntimeError(
                f"{path}: in use by {holder}; wait for it to finish or choose another directory"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"`{what}` (pid {os.getpid()} on {socket.gethostname()})\n")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()


def check_unlocked(path: Path) -> None:
    """Fail if a `locked_dir(path)` block is running in some process (a read-only check)."""
    try:
        f = open(path / LOCK_NAME, encoding="utf-8")
    except OSError:
        return
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = f.read().strip() or "another process"
            raise RuntimeError(f"{path}: in use by {holder}; wait for it to finish") from None
