"""Which streams share a hardware work queue with the training stream (a GPU probe, PyTorch).

    CUDA_DEVICE_MAX_CONNECTIONS=32 python bench/queue_probe.py [--probes 64] [--sleep-ms 40]

CUDA maps every stream onto one of CUDA_DEVICE_MAX_CONNECTIONS hardware work queues, and a kernel
waits behind everything submitted before it to its queue, whatever the stream (loader.workqueues).
This probe measures the mapping instead of assuming it. For each kind of "blocker" stream (the
kinds the training step can run on: a side stream at the default or high priority, in the primary
context or in a green context), it queues several spin kernels of `--sleep-ms` each on the
blocker, then one tiny kernel on each of `--probes` ordinary streams (half made before the blocker,
half after, as DALI's are made before and after the step's) and on the legacy default stream
(where DALI's NVDEC reader colour-converts). A tiny kernel still pending after half a spin shares
the blocker's queue: it waits behind the spins. One JSON line per blocker kind.

The spin kernel (torch.cuda._sleep) occupies one SM, so nothing here waits for SMs: a pending probe
waits for its queue only.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import time
from typing import Any


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--probes", type=int, default=64, help="ordinary streams probed per blocker")
    ap.add_argument("--sleep-ms", type=float, default=40.0, help="length of each spin kernel")
    ap.add_argument("--spins", type=int, default=4, help="spin kernels queued on the blocker")
    ap.add_argument("--kinds", default="side,high,green,green-high",
                    help="blocker kinds, comma-separated")  # fmt: skip
    ap.add_argument("--pattern", choices=("spins", "wait"), default="spins",
                    help="what the blocker holds: its own spins, or a wait for another "
                         "stream's spins (streams waiting for each other's events)")  # fmt: skip
    args = ap.parse_args(argv)

    import os

    import torch

    from loader.cudadrv import libcuda
    from loader.greenctx import SmPartition

    torch.cuda.init()
    torch.zeros(1, device="cuda")  # the primary context, current for this thread
    cuda = libcuda()
    lo, hi = ctypes.c_int(), ctypes.c_int()
    cuda.cuCtxGetStreamPriorityRange(ctypes.byref(lo), ctypes.byref(hi))
    cycles = _cycles_per_ms(torch) * args.sleep_ms
    green = SmPartition(torch.cuda.current_device(), 2, fine=True)

    made: list[int] = []  # raw streams of the current kind (the green ones belong to `green`)

    def raw(priority: int) -> int:
        handle = ctypes.c_void_p()
        error = cuda.cuStreamCreateWithPriority(ctypes.byref(handle), 0x1, priority)
        if error != 0:
            raise RuntimeError(f"cuStreamCreateWithPriority failed: {error}")
        made.append(int(handle.value or 0))
        return made[-1]

    blockers = {
        "side": lambda: raw(0),
        "high": lambda: raw(-1),
        "highest": lambda: raw(hi.value),
        "green": lambda: green.stream(0),
        "green-high": lambda: green.stream(-1),
    }
    common = {"probe": "queues", "cuda_work_queues": os.environ.get("CUDA_DEVICE_MAX_CONNECTIONS"),
              "priority_range": [lo.value, hi.value], "device": torch.cuda.get_device_name(),
              "probes": args.probes, "spins": args.spins, "sleep_ms": args.sleep_ms,
              "pattern": args.pattern}  # fmt: skip
    for kind in args.kinds.split(","):
        before = [raw(0) for _ in range(args.probes // 2)]
        blocker = blockers[kind]()
        after = [raw(0) for _ in range(args.probes - len(before))]
        waits_for = raw(0) if args.pattern == "wait" else None
        result = _probe(torch, blocker, before + after, args.spins, cycles, args.sleep_ms,
                        waits_for)  # fmt: skip
        print(json.dumps({**common, "blocker": kind, **result}), flush=True)
        torch.cuda.synchronize()
        while made:  # the probes, the waited-for stream and a raw blocker alike
            cuda.cuStreamDestroy_v2(ctypes.c_void_p(made.pop()))
    green.close()


def _cycles_per_ms(torch: Any) -> float:
    """Clock cycles of torch.cuda._sleep per millisecond on this GPU."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(1_000_000)  # warm-up
    start.record()
    torch.cuda._sleep(20_000_000)
    end.record()
    end.synchronize()
    return 20_000_000 / start.elapsed_time(end)


def _probe(torch: Any, blocker: int, streams: list[int], spins: int, cycles: float,
           sleep_ms: float, waits_for: int | None = None) -> dict:  # fmt: skip
    """Spin on `blocker` (or, with `waits_for`, spin there and have `blocker` wait for it, then
    run a tiny kernel), then one tiny kernel per stream (and on the legacy default stream)."""
    cells = torch.zeros(len(streams) + 2, device="cuda")
    torch.cuda.synchronize()
    held = torch.cuda.ExternalStream(blocker)
    spinning = torch.cuda.ExternalStream(waits_for) if waits_for else held
    with torch.cuda.stream(spinning):
        for _ in range(spins):
            torch.cuda._sleep(int(cycles))
    if waits_for:
        held.wait_stream(spinning)
        with torch.cuda.stream(held):
            cells[-2:-1].add_(1)
    time.sleep(sleep_ms / 4000)  # the first spin is running, the rest queued
    events = []
    for i, handle in enumerate(streams):
        s = torch.cuda.ExternalStream(handle)
        with torch.cuda.stream(s):
            cells[i : i + 1].add_(1)
        events.append(torch.cuda.Event())
        events[-1].record(s)
    legacy = torch.cuda.default_stream()
    with torch.cuda.stream(legacy):
        cells[-1:].add_(1)
    legacy_event = torch.cuda.Event()
    legacy_event.record(legacy)
    time.sleep(sleep_ms / 2000)  # half a spin: anything not behind the spins is long done
    pending = [i for i, e in enumerate(events) if not e.query()]
    half = len(streams) // 2
    return {
        "blocked": len(pending),
        "blocked_made_before": sum(i < half for i in pending),
        "blocked_made_after": sum(i >= half for i in pending),
        "legacy_blocked": not legacy_event.query(),
    }


if __name__ == "__main__":
    main()
