"""A process pool whose workers die with their parent and stop at once on Ctrl-C.

Each worker leads its own process group (itself and the ffmpeg it runs), ignores SIGINT (the
terminal's Ctrl-C reaches only the parent, which then kills the groups), and asks Linux to send it
SIGTERM when the parent dies, however it dies (SIGKILL included); SIGTERM and SIGHUP make it kill
its whole group. Killing an encode mid-way is safe: prep writes `*.tmp` files and renames them only
when complete, and a re-run redoes what is missing.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _kill_own_group(signum: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
    """This worker and everything it started (its ffmpeg), at once."""
    if os.getpgrp() == os.getpid():  # never the parent's group
        os.killpg(os.getpid(), signal.SIGKILL)
    os._exit(128 + signum)


def _init_worker(parent: int) -> None:
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _kill_own_group)
    signal.signal(signal.SIGHUP, _kill_own_group)
    try:  # Linux: SIGTERM to this worker when its parent dies, SIGKILL included
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the parent-pid check below still helps
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        _kill_own_group()


class WorkerPool:
    """ProcessPoolExecutor of `jobs` such workers; on any exception (Ctrl-C included) in its
    `with` block it kills them and their children instead of waiting, and ignores further
    Ctrl-Cs until they are gone, so repeated Ctrl-C neither hangs nor leaves orphans."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self._pool = ProcessPoolExecutor(jobs, initializer=_init_worker, initargs=(os.getpid(),))
        self._old_sigint: Any = None

    def __enter__(self) -> WorkerPool:
        if threading.current_thread() is threading.main_thread():
            self._old_sigint = signal.signal(signal.SIGINT, _interrupt_once)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                self._pool.shutdown(wait=True)
                return
            if self._old_sigint is not None:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            self.kill()
            self._pool.shutdown(wait=True, cancel_futures=True)
        finally:
            if self._old_sigint is not None:
                signal.signal(signal.SIGINT, self._old_sigint)

    def kill(self) -> None:
        """SIGKILL every worker's process group (the worker and its ffmpeg)."""
        for pid in list(getattr(self._pool, "_processes", None) or {}):  # no public accessor
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:  # not yet its own group leader, or gone already
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def imap_unordered(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """fn(item) for every item, in completion order; a short queue, so a stop is quick."""
        pending: set[Future] = set()
        for item in items:
            pending.add(self._pool.submit(fn, item))
            if len(pending) >= 2 * self.jobs:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (f.result() for f in done)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield from (f.result() for f in done)


def _interrupt_once(signum: int, frame: FrameType | None) -> None:
    """The first Ctrl-C raises KeyboardInterrupt; later ones, during the cleanup, are ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt
