"""Does the loader's GPU work slow the training step by taking the step's SMs? (a GPU probe)

    python -m bench.spill_probe [--steps 60] [--rate 67600] [--loads none,every,rest] [--graph]

Beside the loader, the step on its 130-SM partition takes ~1 ms longer than alone there
(docs/BENCHMARKS.md, twelfth round), although the partition keeps 2 SMs for the loader. DALI's
reader runs two small kernels a decoded frame (its colour conversion, 393 blocks, and the
driver's NV12 copy: 4,096 a step of 128 clips) in the primary context, where a kernel may take
any SM: blocks that do not fit on the loader's 2 SMs can land on the step's whenever a step
kernel leaves room, and the step's next kernel then waits for them. This probe asks whether that
is the cost, with a stand-in load instead of DALI (which cannot be moved off the primary context):

- the stand-in's training step (bench.feed_torch, eager or `--graph`) runs on the partition
  (loader.greenctx, SM by SM, as ucf3d train) on one resident batch, no loader;
- a background thread launches small kernels at `--rate` a second (the hand-over kernel on one
  frame of `--pixels` RGB pixels: 85 blocks of 256 threads at 128 x 170), the rate of DALI's pair
  beside a step of ~60.5 ms;
- the load's stream, per phase (`--loads`): `none`; `every`: a stream of the primary context, as
  DALI's (any SM); `rest`: a stream of a green context holding only the SMs the partition leaves
  (SmPartition.rest_stream: it cannot take the step's). `whole-<load>`: the same with the step on
  every SM (no partition).

One JSON line per phase: the SMs the step ran on (`step_sms`, 0 = every SM), its device ms
(CUDA events on its stream: mean, median, longest), clips/s of the whole phase, and the load's
kernels a second achieved (at most 8 ms of them are queued at once, so a load the SMs cannot keep
up with runs slower than asked, and says so), and how long one load kernel in 50 took from the
end of the kernel before it on its stream to its own end while the steps ran (`load_kernel_us`:
its wait for SMs and its run, which a reader that waits for each frame it maps waits too; where
the stream was idle, also any delay of the launching thread between the event and the launch,
which the longest may be).

If `every` slowed the step and `rest` did not, the loader's kernels would cost the step SMs. On
an H200 both slowed it alike, and empty one-block kernels nearly as much as real-sized ones: the
cost is their number, ~0.18 us each (docs/BENCHMARKS.md, "Thirteenth round"). PyTorch only (the
GPU machine has no Paddle); a diagnostic, not a benchmark of record.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import statistics
import threading
import time
from collections import deque
from typing import Any

TICK_S = 0.001  # the load thread launches what is due every millisecond
QUEUED_TICKS = 8  # at most this many ticks' kernels queued on the load's stream
TIMED_EVERY = 50  # one load kernel in this many is timed on the device (its wait for SMs + run)


def _load(torch: Any, stream: Any, rate: float, pixels: int, stop: threading.Event,
          done: dict) -> None:  # fmt: skip
    """Launch the hand-over kernel on one frame at `rate` a second on `stream` until `stop`."""
    # the hand-over's own kernel, its arguments marshalled once, not per launch
    from loader.handover import THREADS, _kernels, _launcher

    src = torch.randint(0, 256, (pixels * 3,), dtype=torch.uint8, device="cuda")
    out = torch.empty(pixels * 3, dtype=torch.float16, device="cuda")
    torch.cuda.synchronize()
    args = [ctypes.c_void_p(src.data_ptr()), ctypes.c_void_p(out.data_ptr()),
            ctypes.c_int(pixels), ctypes.c_int(0), *[ctypes.c_float(0.0)] * 3,
            *[ctypes.c_float(1.0)] * 3, ctypes.c_int(0)]  # fmt: skip
    grid = (math.ceil(pixels / THREADS), 1)
    launch = _launcher(_kernels()["handover_float16"], grid, (THREADS, 1), args)
    handle = stream.cuda_stream
    queued: deque = deque()
    timed: list[tuple[float, Any, Any]] = []  # (perf_counter at launch, event before, after)
    launched, t0 = 0, time.perf_counter()
    while not stop.is_set():
        due = min(int(rate * (time.perf_counter() - t0)) - launched, int(rate * TICK_S * 4))
        for i in range(launched, launched + max(due, 0)):
            if i % TIMED_EVERY:
                launch(handle)
                continue
            # the event before completes when the stream's previous kernel has: the two events
            # time this kernel's wait for SMs and its run
            before, after = (torch.cuda.Event(enable_timing=True) for _ in range(2))
            before.record(stream)
            launch(handle)
            after.record(stream)
            timed.append((time.perf_counter(), before, after))
        launched += max(due, 0)
        event = torch.cuda.Event()
        event.record(stream)
        queued.append(event)
        if len(queued) > QUEUED_TICKS:
            queued.popleft().synchronize()  # the SMs are behind: wait (the rate falls)
        time.sleep(TICK_S)
    stream.synchronize()
    done.update(kernels=launched, seconds=time.perf_counter() - t0, grid=grid, timed=timed)


def kernel_us(timed: list[tuple[float, Any, Any]], start: float, end: float) -> dict:
    """The timed load kernels launched between perf_counter times start and end (while the steps
    ran): how many, and their wait for SMs + run in us (median, 90th and 99th percentile, most)."""
    took = sorted(1000 * a.elapsed_time(b) for t, a, b in timed if start <= t <= end)
    if not took:
        return {"n": 0}
    at = lambda q: round(took[min(len(took) - 1, int(q * len(took)))], 1)  # noqa: E731
    return {"n": len(took), "median": at(0.5), "p90": at(0.9), "p99": at(0.99),
            "max": round(took[-1], 1)}  # fmt: skip


def stand_in(graph: bool, loader_sms: int) -> tuple[Any, Any, Any, dict, dict]:
    """The stand-in's step on one resident batch (no loader), the partition leaving `loader_sms`
    SMs (SM by SM, as ucf3d train), a stream each way ("whole", "part": made once, as the graphed
    step captures one graph per stream), and the line's head: (torch, consumer, partition,
    streams, head)."""
    from loader.workqueues import widen

    queues = widen(0)  # as bench feed and ucf3d train, before the CUDA context
    import torch

    from bench.feed import FeedConfig
    from bench.feed_torch import torch_consumer
    from loader import LoaderConfig
    from loader.greenctx import shared_partition

    # the stand-in's step only: the loader's settings name no data (nothing is loaded)
    lc = LoaderConfig(manifests="-", shards="-", split=1, subset="train", mode="train",
                      batch_size=128, decode="gpu", dtype="float16")  # fmt: skip
    consumer = torch_consumer(FeedConfig(lc, consumer="torch", graph=graph))
    part = shared_partition(torch.cuda.current_device(), loader_sms, True)
    streams = {"whole": torch.cuda.Stream(), "part": torch.cuda.ExternalStream(part.stream())}
    torch.cuda.synchronize()  # the resident batch made
    head = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
            "cuda_work_queues": queues, "step": consumer.name}  # fmt: skip
    return torch, consumer, part, streams, head


def warm_up(torch: Any, consumer: Any, steps: int) -> None:
    """`steps` steps on the current stream (cuDNN's choices, and the graph, made on it)."""
    for _ in range(steps):
        consumer.step(*consumer.fixed)
    torch.cuda.current_stream().synchronize()


def timed_steps(consumer: Any, steps: int) -> dict[str, float]:
    """`steps` steps on the current stream, two queued at most (as bench feed's in_flight): the
    device ms of each (CUDA events on its stream: mean, median, longest) and clips/s by the wall."""
    marks, pending, t0 = [], [], time.perf_counter()
    for _ in range(steps):
        start = consumer.mark()
        consumer.step(*consumer.fixed)
        marks.append((start, consumer.mark()))
        pending.append(consumer.fence())
        if len(pending) > 2:
            pending.pop(0)()
    for wait in pending:
        wait()
    wall = time.perf_counter() - t0
    took = [a.elapsed_time(b) for a, b in marks]
    batch = consumer.fixed[0].shape[0]
    return {"step_ms": round(statistics.fmean(took), 3),
            "step_ms_median": round(statistics.median(took), 3),
            "step_ms_max": round(max(took), 3),
            "clips_per_s": round(batch * len(took) / wall, 1)}  # fmt: skip


def _phase(torch: Any, consumer: Any, part: Any, streams: dict, load: str,
           args: argparse.Namespace) -> dict:  # fmt: skip
    """The step for args.steps steps on its stream (`streams`: "whole" or "part"), beside
    `load`; one result line."""
    whole = load.startswith("whole-")
    kind = load.removeprefix("whole-")
    line: dict[str, Any] = {"bench": "spill", "load": kind, "step_sms": 0 if whole else part.sms,
                            "device_sms": part.device_sms, "graph": args.graph,
                            "rate_asked": args.rate, "pixels": args.pixels}  # fmt: skip
    if kind == "every":
        load_stream = torch.cuda.Stream()
    elif kind == "rest":
        load_stream = torch.cuda.ExternalStream(part.rest_stream())
        line["load_sms"] = part.device_sms - part.sms
    elif kind != "none":
        raise ValueError(f"unknown load {load!r}: none, every, rest, whole-<load>")
    stop, done = threading.Event(), {}
    with torch.cuda.stream(streams["whole" if whole else "part"]):
        warm_up(torch, consumer, args.warmup)
        thread = None
        if kind != "none":
            thread = threading.Thread(target=_load, daemon=True, args=(
                torch, load_stream, args.rate, args.pixels, stop, done))  # fmt: skip
            thread.start()
            time.sleep(0.5)  # the load running at its rate before the first timed step
        start = time.perf_counter()
        line.update(timed_steps(consumer, args.steps))
        end = time.perf_counter()
        stop.set()
        if thread is not None:
            thread.join()
    if done:
        line["load_kernels_per_s"] = round(done["kernels"] / done["seconds"])
        line["load_grid"] = list(done["grid"])
        line["load_kernel_us"] = kernel_us(done["timed"], start, end)
    return line


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument(
        "--rate",
        type=float,
        default=67_600.0,
        help="load kernels a second (DALI's pair: 4,096 a step of ~60.5 ms)",
    )
    ap.add_argument("--pixels", type=int, default=128 * 170, help="RGB pixels a load kernel")
    ap.add_argument(
        "--loads",
        default="none,every,rest,none,whole-none,whole-every",
        help="phases, comma-separated: none, every, rest, whole-<load>",
    )
    ap.add_argument("--loader-sms", type=int, default=2)
    ap.add_argument("--graph", action="store_true", help="the CUDA-graphed step")
    args = ap.parse_args(argv)

    torch, consumer, part, streams, head = stand_in(args.graph, args.loader_sms)
    for load in args.loads.split(","):
        print(json.dumps({**head, **_phase(torch, consumer, part, streams, load.strip(), args)}),
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
