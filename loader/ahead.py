"""Run an iterator in a thread of its own, a few items ahead of the thread that consumes it.

Why: the training thread spends part of each step in the loader: taking each pipeline's output,
checking its plan lines (a device-to-host copy that waits for the pipeline's GPU work), feeding
the next request and, for the CPU backend, reading and trimming the videos. With
`LoaderConfig.thread_ahead` those happen in a loader thread while the training thread hands the
previous batch over and launches its step (DALI releases the GIL while it waits). Only the DALI
side moves: the hand-over to Paddle/PyTorch stays in the consumer's thread, on its stream.
Measured on an H200 (docs/BENCHMARKS.md, "Fourth round") it did not raise the fed rate (0.890-0.908
with 2 or 4 batches ahead against 0.894-0.907 without), so it is off by default.

The worker owns the source: it iterates it, and closes it (so a backend sees an abandoned epoch
in the thread that ran it) when the consumer stops early. An exception in the source is raised
in the consumer, the same object.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_DONE = object()
_POLL_S = 0.05  # how often a blocked worker looks whether the consumer has gone


def ahead(source: Iterator[T], depth: int, name: str = "ucf3d-loader") -> Iterator[T]:
    """Yield `source`'s items in order, taken up to `depth` items ahead by a worker thread."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    items: queue.Queue[tuple[BaseException | None, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[BaseException | None, Any]) -> bool:
        while not stop.is_set():
            try:
                items.put(entry, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in source:
                if not put((None, item)):
                    break
            else:
                put((None, _DONE))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            put((e, None))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=work, name=name, daemon=True)
    worker.start()
    try:
        while True:
            error, item = items.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a put, let the worker close the source
            try:
                items.get(timeout=_POLL_S)
            except queue.Empty:
                pass
        worker.join()
