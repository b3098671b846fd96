"""bench feed's timing loop: training steps queued a few ahead on the device, each phase timed on
the host (the training thread's data, launch and fence time per step) and on the device (timing
events around each step)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from bench.measure import (
    BySecond,
    cpu_seconds,
    host_counters,
    host_delta,
    steal_seconds,
    thread_ticks,
    threads_cpu,
)

if TYPE_CHECKING:
    from bench.feed import Consumer


def timed(
    batches: Iterator[tuple[Any, Any]],
    consumer: Consumer,
    seconds: float,
    warmup: float,
    in_flight: int,
) -> dict:
    """Steps for `warmup` + `seconds`, at most `in_flight` queued on the device; clips/s, data
    wait and CPU use over the timed part.

    `host_ms_per_step` splits the host thread's time per step (wall, and its own CPU time where
    it worked rather than slept): `data` in the loader, `launch` queuing the step, `fence` waiting
    for the step before last. Their sum is the period; a fence near 0 means the device waited for
    the host (data or launch), not the other way round.

    `device_ms_per_step` (GPU) is the same period seen from the training stream, from timing
    events around each step: `step` from its first kernel's turn to its last kernel's end (longer
    than alone when the loader's work slows it, or when the host launches slower than it runs),
    `between` from one step's end to the next one's start (the hand-over's kernels, and the time
    the stream had nothing to do because the host had not queued the next step); `between_pct`,
    its share of the device's time, bounds the device's data wait from above (`data_wait_pct` is
    the host thread's, which costs nothing while steps are queued ahead of it).
    """
    pending: list[Callable[[], None]] = []
    marks: list[tuple[Any, Any]] = []  # (before, after) each timed step, on the device
    t_warm = None
    clips = steps = 0
    wall_in = {"data": 0.0, "launch": 0.0, "fence": 0.0}
    cpu_in = {"data": 0.0, "launch": 0.0}
    t0 = c0 = 0.0
    h0: dict[str, float] = {}
    th0: dict[int, tuple[str, int]] = {}
    stolen = BySecond(lambda: None, 0.0)  # the hypervisor's steal in each second (from t0)
    ends: list[float] = []  # each timed step's end on the host (the clips' seconds: timeline)
    tick, ttick = time.perf_counter(), time.thread_time()
    for x, y in batches:
        now, tnow = time.perf_counter(), time.thread_time()
        data_wall, data_cpu = now - tick, tnow - ttick
        if t_warm is None:
            t_warm = now + warmup  # the clock starts at the first batch
        counting = bool(t0)  # a timed step (the warm-up's are not)
        before = consumer.mark() if consumer.mark and counting else None
        consumer.step(x, y)
        if before is not None:
            marks.append((before, consumer.mark()))
        pending.append(consumer.fence())
        launched, tlaunched = time.perf_counter(), time.thread_time()
        if len(pending) >= in_flight:
            pending.pop(0)()  # wait for the step before last
        tick = time.perf_counter()
        if counting:
            wall_in["data"] += data_wall
            cpu_in["data"] += data_cpu
            wall_in["launch"] += launched - now
            cpu_in["launch"] += tlaunched - tnow
            wall_in["fence"] += tick - launched
        ttick = time.thread_time()
        if not t0:
            if tick >= t_warm:
                t0, c0, h0, th0 = tick, cpu_seconds(), host_counters(), thread_ticks()
                stolen = BySecond(steal_seconds, t0)
            continue
        stolen.at(tick)
        clips += int(x.shape[0])
        steps += 1
        ends.append(tick - t0)
        if tick - t0 >= seconds:
            break
    for done in pending:
        done()
    wall = time.perf_counter() - t0
    per_step = {k: round(1000 * v / max(steps, 1), 2) for k, v in wall_in.items()}
    per_step |= {f"{k}_cpu": round(1000 * v / max(steps, 1), 2) for k, v in cpu_in.items()}
    result = {
        "clips_per_s": round(clips / wall, 1),
        "steps": steps,
        "data_wait_pct": round(100 * wall_in["data"] / wall, 2),
        "host_ms_per_step": per_step,
        "cpu_cores_used": round((cpu_seconds() - c0) / wall, 2),
        # what the host took meanwhile: hypervisor steal, cgroup throttling, this thread preempted
        "host_taken": host_delta(h0, host_counters()),
        # where the process's CPU time went: cores by thread name (DALI's, the driver's, ours)
        "threads_cpu": threads_cpu(th0, thread_ticks(), wall),
        "wall_s": round(wall, 1),
        # steps ended in each second of the timed part: a stall shows as a short second
        "steps_by_second": per_second(ends),
        # cores the hypervisor took from the machine in each of those seconds (Linux; zeros
        # elsewhere): a short second beside a large steal is the machine's stall, not the loader's
        "steal_by_second": stolen.series(t0 + ends[-1]) if ends else [],
        "_t0": t0,  # perf_counter at the timed part's start (run_feed places events by it)
    }
    if len(marks) > 1:
        result["device_ms_per_step"] = device_split(marks)
    return result


def run_steps(
    batches: Iterator[tuple[Any, Any]], consumer: Consumer, n: int, in_flight: int
) -> None:
    """n more steps as timed() queues them (in_flight ahead), all finished on return."""
    pending: list[Callable[[], None]] = []
    for _, (x, y) in zip(range(n), batches, strict=False):
        consumer.step(x, y)
        pending.append(consumer.fence())
        if len(pending) >= in_flight:
            pending.pop(0)()
    for done in pending:
        done()


def per_second(times: list[float]) -> list[int]:
    """How many of `times` (seconds from the start) fall in each whole second."""
    counts = [0] * (int(max(times, default=0.0)) + 1)
    for t in times:
        counts[int(t)] += 1
    return counts


def device_split(marks: list[tuple[Any, Any]]) -> dict[str, float]:
    """Ms per step on the device: the step itself, and from its end to the next start; mean,
    median and longest of each (a mean far above an unmoved median, with one long step or gap,
    is a stall; a median that moved with the mean is every step slower)."""
    steps = [a.elapsed_time(b) for a, b in marks]
    between = [marks[i][1].elapsed_time(marks[i + 1][0]) for i in range(len(marks) - 1)]
    out = {}
    for name, ms in (("step", steps), ("between", between)):
        out[name] = round(statistics.fmean(ms), 2)
        out[f"{name}_median"] = round(statistics.median(ms), 2)
        out[f"{name}_max"] = round(max(ms), 2)
    # the device's own data wait, at most: its time outside steps (the hand-over's kernels too)
    out["between_pct"] = round(100 * sum(between) / (sum(steps[:-1]) + sum(between)), 2)
    return out
