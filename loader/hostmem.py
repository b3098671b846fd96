"""Host memory readings (Linux /proc): what the NVDEC backend's open files cost, what is free."""

from __future__ import annotations

import os
from pathlib import Path


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
