"""Measuring aids shared by the benchmarks: nvidia-smi sampling, process CPU time, timed loops."""

from __future__ import annotations

import faulthandler
import functools
import gc
import os
import re
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


@functools.cache  # one nvidia-smi per process (bench feed names the GPU twice: line, cache key)
def gpu_name() -> str:
    """The first GPU's name from nvidia-smi, or "cpu" where there is none."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return "cpu"
    out = subprocess.run([exe, "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                         text=True, timeout=30)  # fmt: skip
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else "unknown GPU"


class GpuSampler:
    """Background `nvidia-smi -lms 200` reader: mean/max decoder and SM utilisation (percent)."""

    QUERY = ["--query-gpu=utilization.decoder,utilization.gpu", "--format=csv,noheader,nounits"]

    def __init__(self, period_ms: int = 200) -> None:
        self.period_ms = period_ms
        self.samples: list[tuple[float, float]] = []
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuSampler:
        exe = shutil.which("nvidia-smi")
        if exe is None:
            return self
        cmd = [exe, *self.QUERY, f"-lms={self.period_ms}"]
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            parts = line.split(",")[:2]  # first GPU's line (one GPU per loader process)
            try:
                self.samples.append((float(parts[0]), float(parts[1])))
            except (ValueError, IndexError):
                continue

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def summary(self) -> dict[str, float | int | None]:
        if not self.samples:
            return {"nvdec_util_mean": None, "sm_util_mean": None, "gpu_samples": 0}
        dec = [s[0] for s in self.samples]
        sm = [s[1] for s in self.samples]
        return {
            "nvdec_util_mean": round(sum(dec) / len(dec), 1),
            "nvdec_util_max": max(dec),
            "sm_util_mean": round(sum(sm) / len(sm), 1),
            "sm_util_max": max(sm),
            "gpu_samples": len(self.samples),
        }


def cpu_seconds(pids: list[int] | None = None) -> float:
    """User + system CPU seconds of this process (pids=None) or of the given processes."""
    if pids is None:
        t = os.times()
        return t.user + t.system
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def measure(
    batches: Iterator[int], seconds: float, warmup: float, cpu: Callable[[], float]
) -> dict[str, float]:
    """Consume batch sizes: discard `warmup` seconds, then count clips for `seconds`."""
    t_end_warm = time.perf_counter() + warmup
    for _ in batches:
        if time.perf_counter() >= t_end_warm:
            break
    clips, n_batches = 0, 0
    t0, c0 = time.perf_counter(), cpu()
    for n in batches:
        clips += n
        n_batches += 1
        if time.perf_counter() - t0 >= seconds:
            break
    wall, used = time.perf_counter() - t0, cpu() - c0
    return {
        "clips": clips,
        "batches": n_batches,
        "wall_s": round(wall, 2),
        "cpu_cores_used": round(used / wall, 2),
        "clips_per_s": round(clips / wall, 1),
    }


class GilProbe:
    """A thread that sleeps `period_s` again and again and notes how late it wakes: Python's lock
    (the GIL) held by native code that does not let go of it (DALI builds and frees pipelines so)
    shows as a late wake-up, and stops the training thread for as long.

    It also times Python's garbage collections (gc.callbacks), which hold the lock throughout;
    and with `stacks` (a file) it says who held the lock: before each sleep it arms faulthandler's
    watchdog (a C thread, which needs no lock) for `period_s + late_s`, and disarms it on waking,
    so that a stall longer than that dumps every thread's Python stack into the file while the
    lock is still held, at most `dumps` times. The thread holding it is in one of the stacks (a
    thread in native code shows the Python line that called it); summary() counts their
    innermost frames.
    """

    def __init__(self, period_s: float = 0.005, late_s: float = 0.02, stacks: Path | None = None,
                 dumps: int = 30) -> None:  # fmt: skip
        self.period_s = period_s
        self.late_s = late_s  # later than this counts as a stall
        self.stalls: list[tuple[float, float]] = []  # (perf_counter at the sleep's end, late by)
        self.collections: list[tuple[float, float, int]] = []  # (perf_counter at end, s, gen)
        self.stacks = stacks
        self.dumps = dumps
        self._dumped = 0
        self._gc_start = 0.0
        self._file: Any = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="gil-probe", daemon=True)

    def __enter__(self) -> GilProbe:
        if self.stacks is not None:
            self._file = open(self.stacks, "w")  # noqa: SIM115 (closed in __exit__)
        gc.callbacks.append(self._collected)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        gc.callbacks.remove(self._collected)
        if self._file is not None:
            faulthandler.cancel_dump_traceback_later()
            self._file.close()

    def _collected(self, phase: str, info: dict) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._gc_start = now
        else:
            self.collections.append((now, now - self._gc_start, info["generation"]))

    def _watch(self) -> None:
        while not self._stop.is_set():
            armed = self._file is not None and self._dumped < self.dumps
            if armed:
                faulthandler.dump_traceback_later(self.period_s + self.late_s, file=self._file)
            t = time.perf_counter()
            time.sleep(self.period_s)
            late = time.perf_counter() - t - self.period_s
            if armed:
                faulthandler.cancel_dump_traceback_later()
            if late > self.late_s:
                self.stalls.append((t + self.period_s, late))
                self._dumped += armed

    def summary(self, start: float, end: float, listed: int = 40) -> dict[str, object]:
        """The stalls between perf_counter times start and end: how many, their seconds in all,
        the longest, and the first `listed` longer than 50 ms as [seconds from start, ms]; the
        garbage collections among them; with `stacks`, what the dumped threads were doing."""
        inside = [(t - start, late) for t, late in list(self.stalls) if start <= t <= end]
        collected = [(s, gen) for t, s, gen in list(self.collections) if start <= t <= end]
        out: dict[str, object] = {
            "over_ms": round(1000 * self.late_s),
            "stalls": len(inside),
            "stalled_s": round(sum(late for _, late in inside), 3),
            "longest_ms": round(1000 * max((late for _, late in inside), default=0.0), 1),
            "long": [[round(t, 2), round(1000 * late)] for t, late in inside if late > 0.05][
                :listed
            ],
            "gc": _by_generation(collected),
        }
        if self.stacks is not None:
            out["stacks"] = {"file": str(self.stacks), "dumps": self._dumped,
                             "innermost": innermost_frames(self.stacks)}  # fmt: skip
        return out


def _by_generation(collected: list[tuple[float, int]]) -> dict[str, list[float]]:
    """Garbage collections (seconds, generation) as {generation: [how many, their seconds, the
    longest in ms]}."""
    out = {}
    for gen in sorted({g for _, g in collected}):
        took = [s for s, g in collected if g == gen]
        out[str(gen)] = [len(took), round(sum(took), 4), round(1000 * max(took), 2)]
    return out


def innermost_frames(dump: Path, top: int = 15) -> list[list[object]]:
    """In faulthandler dumps of every thread: each thread's innermost Python frame ("file:line
    function", the probe's own left out), with how many dumps had a thread there, most first."""
    counts: Counter[str] = Counter()
    lines = dump.read_text(errors="replace").splitlines() if dump.exists() else []
    first = False  # the next `File` line is a thread's innermost
    for line in lines:
        if line.startswith(("Thread 0x", "Current thread 0x")):
            first = True
        elif first and line.strip().startswith("File "):
            first = False
            m = re.match(r'\s*File "(.*)", line (\d+) in (.*)', line)
            if m and not m.group(1).endswith("bench/measure.py"):
                counts[f"{'/'.join(Path(m.group(1)).parts[-2:])}:{m.group(2)} {m.group(3)}"] += 1
    return [[frame, n] for frame, n in counts.most_common(top)]
