"""Host readings (Linux /proc): what the NVDEC backend's open files cost, what memory is free, and
how much CPU time the machine's hypervisor takes (which stalls training: docs/BENCHMARKS.md,
"Fifteenth round")."""

from __future__ import annotations

import os
from pathlib import Path

# share of the machine's busy CPU time its hypervisor may take before bench feed and ucf3d train
# say so: ~0.1 % on a quiet H200 host; ~3-35 % on one where 11 of 13 fed lines stalled 45-82 ms
# (docs/BENCHMARKS.md, "Fifteenth round")
STEAL_WARN_PCT = 1.0


def host_rss_bytes() -> int | None:
    """This process's resident memory now (bytes; Linux), or None elsewhere."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def host_available_bytes() -> int | None:
    """The host memory available to new allocations now (MemAvailable; Linux), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def host_rss_gb() -> float | None:
    """host_rss_bytes in GB: a segment's pipelines keep a demuxer open for every file of their
    lists, so what a larger segment costs the host shows here."""
    rss = host_rss_bytes()
    return None if rss is None else round(rss / 1e9, 3)


def cpu_busy_steal() -> tuple[float, float] | None:
    """The machine's CPU seconds since boot, all CPUs: (busy, stolen). Busy is user, nice, system,
    irq and softirq time; stolen is the time the hypervisor ran something else while a virtual
    CPU had work (counted apart from busy). None where /proc/stat has no such line."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 8:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    return sum(fields[i] for i in (0, 1, 2, 5, 6)) / tick, fields[7] / tick


def steal_pct(
    before: tuple[float, float] | None, after: tuple[float, float] | None
) -> float | None:
    """Stolen CPU time as a share of the busy time between two cpu_busy_steal() readings (%,
    unrounded), or None where either is unknown or nothing ran."""
    if before is None or after is None or after[0] <= before[0]:
        return None
    return 100 * (after[1] - before[1]) / (after[0] - before[0])
