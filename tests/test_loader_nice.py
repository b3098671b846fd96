"""loader.nice: the loader's threads reniced, the consumer's left alone; and through ClipLoader."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from test_loader import world  # noqa: F401 - module fixture

from loader.nice import renice_others

ROOT = Path(__file__).resolve().parent.parent
linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice: Linux")


def _nice(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


@linux
def test_renice_others_raises_every_other_thread_once() -> None:
    ready, stop, tids = threading.Barrier(3), threading.Event(), []

    def idle() -> None:
        tids.append(threading.get_native_id())
        ready.wait()
        stop.wait()

    workers = [threading.Thread(target=idle) for _ in range(2)]
    for w in workers:
        w.start()
    ready.wait()
    try:
        me = threading.get_native_id()
        before = _nice(me)
        assert renice_others(before + 3) >= 2
        assert all(_nice(t) == before + 3 for t in tids)
        assert _nice(me) == before  # the caller keeps its priority
        assert renice_others(before + 3) == 0  # nothing left to raise
        assert renice_others(before + 1) == 0  # never lowers one (that needs privileges)
        assert all(_nice(t) == before + 3 for t in tids)
        assert renice_others(0) == 0
    finally:
        stop.set()
        for w in workers:
            w.join()


@linux
def test_loader_renices_its_threads_not_the_consumer(world: dict) -> None:  # noqa: F811
    """The CPU backend's DALI threads (made in C++) end up niced; the iterating thread does not.
    In a child process: the niced threads of this one would slow the tests that follow."""
    script = f"""
import os, threading
from loader import ClipLoader, LoaderConfig
me = threading.get_native_id()
before = os.getpriority(os.PRIO_PROCESS, me)
cfg = LoaderConfig(manifests={str(world["manifests"])!r}, batch_size=5, num_threads=2,
                   loader_nice=before + 5)
with ClipLoader(cfg) as loader:
    batches = 0
    for _ in loader.epoch(0):
        batches += 1
    others = [int(t) for t in os.listdir("/proc/self/task") if int(t) != me]
    low = [t for t in others if os.getpriority(os.PRIO_PROCESS, t) < before + 5]
    print(batches, len(others), len(low), os.getpriority(os.PRIO_PROCESS, me) - before)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    batches, others, low, mine = map(int, out.stdout.split())
    assert batches > 0 and others > 0  # DALI's threads were there
    assert low == 0 and mine == 0  # all of them niced, the consumer not


def test_loader_nice_is_checked(world: dict) -> None:  # noqa: F811
    from loader import LoaderConfig

    with pytest.raises(ValueError, match="loader_nice must be in 0..19"):
        LoaderConfig(manifests=world["manifests"], loader_nice=20)
