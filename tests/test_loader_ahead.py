"""loader.ahead: an iterator run in a worker thread, and ClipLoader with `thread_ahead`."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from test_loader import corrupted_copy, make, world  # noqa: F401 - module fixture

from loader import ClipLoader, LoaderConfig, LoaderError
from loader.ahead import ahead


def counting(n: int, log: dict) -> Iterator[int]:
    """0..n-1, recording how far it was taken, in which thread, and whether it was closed."""
    try:
        for i in range(n):
            log["taken"] = i + 1
            log["thread"] = threading.current_thread().name
            yield i
    finally:
        log["closed"] = threading.current_thread().name


def test_items_in_order_from_a_worker_thread() -> None:
    log: dict = {}
    assert list(ahead(counting(50, log), 3, name="worker")) == list(range(50))
    assert log["thread"] == "worker" and log["closed"] == "worker"


def test_worker_stays_at_most_depth_ahead() -> None:
    log: dict = {}
    it = ahead(counting(100, log), 2)
    assert next(it) == 0
    time.sleep(0.3)  # the worker runs on until the queue is full
    assert log["taken"] <= 1 + 2 + 1  # the one handed out, `depth` queued, one waiting to go in
    it.close()


def test_early_close_stops_the_worker_and_closes_the_source() -> None:
    log: dict = {}
    it = ahead(counting(1000, log), 2, name="early")
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()
    assert log["closed"] == "early" and log["taken"] < 1000
    assert "early" not in {t.name for t in threading.enumerate()}  # no worker left behind


def test_source_errors_reach_the_consumer() -> None:
    def failing() -> Iterator[int]:
        yield 1
        raise LoaderError("shard-000.tar: sample v_X_g01_c01: cannot decode")

    it = ahead(failing(), 2)
    assert next(it) == 1
    with pytest.raises(LoaderError, match="sample v_X_g01_c01: cannot decode"):
        next(it)
    with pytest.raises(ValueError, match="depth must be >= 1"):
        next(ahead(iter([]), 0))


def test_loader_thread_gives_the_same_batches(world: dict) -> None:  # noqa: F811
    def epochs(loader: ClipLoader) -> list[tuple[list[str], np.ndarray]]:
        return [(b.keys, b.clips.numpy()) for e in (0, 1) for b in loader.epoch(e)]

    with make(world, seed=4) as loader:
        inline = epochs(loader)
    with make(world, seed=4, thread_ahead=2) as loader:
        threaded = epochs(loader)
        it = loader.epoch(2)
        next(it)
        it.close()  # abandoned in the consumer: the worker closes the backend's epoch
        again = [(b.keys, b.clips.numpy()) for b in loader.epoch(0)]
    assert len(inline) == len(threaded)
    for (ka, a), (kb, b) in zip(inline, threaded, strict=True):
        assert ka == kb and np.array_equal(a, b)
    assert all(ka == kb and np.array_equal(a, b) for (ka, a), (kb, b) in zip(
        inline[: len(again)], again, strict=True))  # fmt: skip
    with pytest.raises(ValueError, match="thread_ahead must be >= 0"):
        make(world, thread_ahead=-1)


def test_loader_thread_reports_a_bad_sample(world: dict, tmp_path: Path) -> None:  # noqa: F811
    manifests, shard, key = corrupted_copy(world, tmp_path, "header")
    cfg = LoaderConfig(manifests=manifests, shards=tmp_path / "shards", batch_size=5,
                       num_threads=2, mode="clip", subset="test", thread_ahead=2)  # fmt: skip
    with ClipLoader(cfg) as loader, pytest.raises(LoaderError, match=f"{shard}: sample {key}"):
        list(loader.epoch(0))
