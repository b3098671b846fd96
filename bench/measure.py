"""Measuring aids shared by the benchmarks: nvidia-smi sampling, process CPU time, timed loops."""

from __future__ import annotations

import functools
import gc
import os
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from loader.hostmem import cpu_busy_steal, steal_pct


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
    shows as a late wake-up, and stops the training thread for as long. So does a host that does
    not run the lock's holder (host_counters says whether it was throttled or preempted, or the
    machine's CPUs paused by its hypervisor: steal, which made the fifteenth round's stalls).

    It also times Python's garbage collections (gc.callbacks), which hold the lock throughout,
    and lists the slow ones (over `late_s`) with how many objects each freed: a slow collection
    that freed few objects ran a slow finalizer (or waited for the lock), not a long walk. With
    `census` (bench feed --gc-census) nothing found in a reference cycle is freed
    (gc.DEBUG_SAVEALL) and the summary counts those objects by type: what the fed loop makes
    cycles of (the seventeenth round's 35 ms collections beside stalls; a diagnosis run, since
    the objects then live to the end).
    (Dumping every thread's stack at a stall, with faulthandler's watchdog, named the holder but
    crashed one H200 run of six mid-dump: it reads other threads' frames without the lock;
    docs/BENCHMARKS.md, fourteenth round. `py-spy record --gil` reads them from outside.)
    """

    PERIOD_S = 0.005  # how often the probe thread wakes, unless told

    def __init__(self, period_s: float | None = PERIOD_S, late_s: float = 0.02,
                 census: bool = False) -> None:  # fmt: skip
        self.period_s = period_s  # None: no probe thread (the collections are still timed)
        self.late_s = late_s  # later than this counts as a stall
        self.census = census
        self.stalls: list[tuple[float, float]] = []  # (perf_counter at the sleep's end, late by)
        # (perf_counter at end, s, generation, objects freed)
        self.collections: list[tuple[float, float, int, int]] = []
        self.kept: dict[str, int] = {}  # census: objects found in cycles, by type
        self._gc_start = 0.0
        self._debug = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="gil-probe", daemon=True)

    def __enter__(self) -> GilProbe:
        gc.callbacks.append(self._collected)
        if self.census:
            self._debug = gc.get_debug()
            gc.set_debug(self._debug | gc.DEBUG_SAVEALL)
        if self.period_s is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        gc.callbacks.remove(self._collected)
        if self.census:
            gc.collect()
            kept = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage)
            self.kept = dict(kept.most_common(20))
            gc.garbage.clear()
            gc.set_debug(self._debug)

    def _collected(self, phase: str, info: dict) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._gc_start = now
        else:
            self.collections.append((now, now - self._gc_start, info["generation"],
                                     info.get("collected", 0)))  # fmt: skip

    def _watch(self) -> None:
        assert self.period_s is not None
        while not self._stop.is_set():
            t = time.perf_counter()
            time.sleep(self.period_s)
            late = time.perf_counter() - t - self.period_s
            if late > self.late_s:
                self.stalls.append((t + self.period_s, late))

    def summary(self, start: float, end: float, listed: int = 40) -> dict[str, object]:
        """The stalls between perf_counter times start and end: how many, their seconds in all,
        the longest, and the first `listed` longer than 50 ms as [seconds from start, ms]; and
        the garbage collections that ended in that time."""
        inside = [(t - start, late) for t, late in list(self.stalls) if start <= t <= end]
        done = [c for c in list(self.collections) if start <= c[0] <= end]
        collected = [(s, gen) for _, s, gen, _ in done]
        return {
            "probed": self.period_s is not None,  # False: no thread timed the lock (stalls 0)
            "over_ms": round(1000 * self.late_s),
            "stalls": len(inside),
            "stalled_s": round(sum(late for _, late in inside), 3),
            "longest_ms": round(1000 * max((late for _, late in inside), default=0.0), 1),
            "long": [[round(t, 2), round(1000 * late)] for t, late in inside if late > 0.05][
                :listed
            ],
            "gc": _by_generation(collected),
            # [seconds from start, ms, generation, objects freed] of each slow collection
            "gc_slow": [[round(t - start, 2), round(1000 * took, 1), gen, freed]
                        for t, took, gen, freed in done if took > self.late_s][:listed],
            **({"census": self.kept} if self.census else {}),
        }


def _by_generation(collected: list[tuple[float, int]]) -> dict[str, list[float]]:
    """Garbage collections (seconds, generation) as {generation: [how many, their seconds, the
    longest in ms]}."""
    out = {}
    for gen in sorted({g for _, g in collected}):
        took = [s for s, g in collected if g == gen]
        out[str(gen)] = [len(took), round(sum(took), 4), round(1000 * max(took), 2)]
    return out


def host_counters(thread_id: int | None = None) -> dict[str, float]:
    """What the host took from this process so far (host_delta: over a window), where Linux says:
    CPU time stolen from this machine by its hypervisor (/proc/stat, all CPUs), time the process's
    cgroup was throttled for exceeding its CPU quota (cgroup v2 or v1 cpu.stat), and how often
    thread `thread_id` (a native id; default: the caller) was preempted (its involuntary context
    switches). Any of them stops whichever thread holds Python's lock as well."""
    out: dict[str, float] = {}
    cpu = cpu_busy_steal()
    if cpu is not None:  # steal / busy: the share of the machine's work the hypervisor delayed
        out["busy_s"], out["steal_s"] = cpu
    for path, scale in (("/sys/fs/cgroup/cpu.stat", 1e-6), ("/sys/fs/cgroup/cpu/cpu.stat", 1e-9)):
        stat = _keyed(Path(path))
        if "nr_throttled" in stat:
            out["throttled_periods"] = stat["nr_throttled"]
            out["throttled_s"] = scale * stat.get("throttled_usec", stat.get("throttled_time", 0))
            break
    tid = threading.get_native_id() if thread_id is None else thread_id
    status = _keyed(Path(f"/proc/self/task/{tid}/status"), ":")
    if "nonvoluntary_ctxt_switches" in status:
        out["preempted"] = status["nonvoluntary_ctxt_switches"]
    return out


def steal_seconds() -> float | None:
    """CPU time the hypervisor has taken from this machine since boot, all CPUs (None: unknown)."""
    cpu = cpu_busy_steal()
    return None if cpu is None else cpu[1]


class BySecond:
    """A growing counter's growth in each whole second of a window that starts at `t0`
    (perf_counter): `at(t)` as time passes (it reads the counter only when a second has ended),
    `series(t_end)` the growth per second, the last, partial second included, as long as
    bench.feedloop.per_second's list for the same window. A span read late (a stall across a
    boundary) is spread evenly over the seconds it covers."""

    def __init__(self, read: Callable[[], float | None], t0: float) -> None:
        self._read, self._t0 = read, t0
        self._last, self._second = read(), 0
        self._out: list[float] = []

    def at(self, t: float) -> None:
        second = int(t - self._t0)
        if second > self._second:
            self._close(second)

    def _close(self, second: int) -> None:
        value = self._read()
        span = second - self._second
        grew = 0.0 if value is None or self._last is None else value - self._last
        self._out += [round(grew / span, 3)] * span
        self._last, self._second = value, second

    def series(self, t_end: float) -> list[float]:
        self._close(int(t_end - self._t0) + 1)
        return self._out


def host_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """host_counters' growth from `before` to `after` (the counters both have), and how busy the
    host is at the end: the process's threads (Linux) and the 1-minute load average (runnable
    threads, machine-wide; more than the cores means threads wait for one)."""
    out = {k: round(after[k] - before[k], 3) for k in before if k in after}
    readings = [(c["busy_s"], c["steal_s"]) if "busy_s" in c else None for c in (before, after)]
    stolen = steal_pct(*readings)
    if stolen is not None:
        out["steal_pct"] = round(stolen, 1)
    if os.path.isdir("/proc/self/task"):
        out["threads"] = len(os.listdir("/proc/self/task"))
    if hasattr(os, "getloadavg"):
        out["load_1m"] = round(os.getloadavg()[0], 2)
    return out


def _keyed(path: Path, sep: str | None = None) -> dict[str, float]:
    """A file of `key value` (or `key<sep> value`) lines as numbers; {} where it cannot be read."""
    out = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        key, _, value = line.partition(sep) if sep else line.partition(" ")
        try:
            out[key.strip()] = float(value.split()[0])
        except (IndexError, ValueError):
            continue
    return out


def thread_ticks() -> dict[int, tuple[str, int]]:
    """Each thread of this process (Linux): native id -> (name, CPU ticks used so far, user and
    system); {} elsewhere."""
    out = {}
    try:
        entries = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in entries:
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:  # ended meanwhile
            continue
        # "tid (name) state ...": the name may hold spaces and parentheses; utime, stime are
        # fields 14 and 15, counted after its closing parenthesis
        name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :]
        fields = rest.split()
        out[int(tid)] = (name, int(fields[11]) + int(fields[12]))
    return out


def threads_cpu(
    before: dict[int, tuple[str, int]],
    after: dict[int, tuple[str, int]],
    seconds: float,
    top: int = 8,
) -> dict[str, list[float]]:
    """Cores used between two thread_ticks() by this process's threads, grouped by name with the
    digits taken out ("ucf3d-segment_0" and DALI's numbered workers each count as one group):
    {group: [cores, threads]}, the `top` busiest groups, busiest first. A thread that ended
    before `after` was taken is not counted (its ticks are gone with it)."""
    tick = os.sysconf("SC_CLK_TCK")
    groups: dict[str, list[float]] = {}
    for tid, (name, ticks) in after.items():
        used = ticks - before.get(tid, (name, 0))[1]
        group = "".join("#" if c.isdigit() else c for c in name)
        entry = groups.setdefault(group, [0.0, 0])
        entry[0] += used / tick / max(seconds, 1e-9)
        entry[1] += 1
    ranked = sorted(groups.items(), key=lambda kv: -kv[1][0])[:top]
    return {g: [round(cores, 2), int(n)] for g, (cores, n) in ranked}
