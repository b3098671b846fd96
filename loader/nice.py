"""Keep the consumer's thread ahead of the loader's threads on a busy host: renice the others.

Why (docs/BENCHMARKS.md, "Fourth round"): beside training on an H200 host with 16 cores, the
NVDEC loader's threads kept ~14 cores busy, and the one thread that hands batches over and
launches the training steps got about a third of a core when it needed one: queuing a step took
34.6 ms of wall time for 10.7 ms of its own CPU time (alone, 14 ms for 8.6). Every millisecond it
waits for a core is a millisecond the GPU may wait for the next step.

Measured since, it has not paid: 0.901 reniced to 10 against ~0.90 (fifth round, a loader then
short of cores), and with today's loader (~7 cores busy) 0.962, 0.958, 0.949 at 5 and 0.942 at
10 against 0.941-0.957 on the same machine (fifteenth round), whose stalls came from the
hypervisor pausing the machine's virtual CPUs, which no nice value reaches. So it is off (0) by
default, a lever for hosts where the training thread really waits for a core.

On Linux the nice value belongs to each thread, and a thread starts with its creator's. DALI makes
its threads in C++, as pipelines are built (the first batch, then a new pipeline set every few
epochs, in a background thread), so `renice_others` looks at every thread of the process each
time it is called and only ever raises a value (lowering one back needs privileges). An
unprivileged process can do this; elsewhere it does nothing.
"""

from __future__ import annotations

import os
import sys
import threading

_TASKS = "/proc/self/task"


def renice_others(nice: int, keep: int | None = None) -> int:
    """Give every thread of this process but `keep` (default: the caller) a nice value of at least
    `nice`; the number of threads changed. 0 or less, or not Linux: nothing happens."""
    if nice <= 0 or not sys.platform.startswith("linux"):
        return 0
    keep = threading.get_native_id() if keep is None else keep
    changed = 0
    for entry in os.scandir(_TASKS):
        tid = int(entry.name)
        if tid == keep:
            continue
        try:  # PRIO_PROCESS on a thread id: that thread only (Linux)
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
                changed += 1
        except (ProcessLookupError, PermissionError):  # ended meanwhile, or not ours to change
            continue
    return changed
