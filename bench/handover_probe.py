"""The hand-over alone on the GPU: the kernel (loader.handover) against the framework's ops.

    python -m bench.handover_probe [--batch 128] [--chunk 16] [--reps 200] [--loader-sms 2]

One batch as DALI hands it over (uint8 (chunk, T, H, W, 3) chunks on the device), normalised
`--reps` times by bench feed's stand-in hand-over (bench.feed_torch.to_torch) with each setting,
on a stream of the training's SM partition (loader.greenctx; `--loader-sms 0`: a side stream on
every SM), into a graphed step's input as bench feed does. The reps are queued behind a spin
kernel, so CUDA events time the device's work, not the host's launches (whose time per batch is
reported apart: in training it overlaps the step queued before). One JSON line: each hand-over's
device and host ms and the device ratio. PyTorch only (the GPU machine has no Paddle).
"""

from __future__ import annotations

import argparse
import json
import time
from types import SimpleNamespace
from typing import Any

from loader.config import ACTIVITYNET_MEAN

SPIN_CYCLES = 2_000_000_000  # ~1 s at H200 clocks: longer than queuing the reps takes


def _time(torch: Any, chunks: list, n: int, cfg: Any, into: Any, reps: int) -> tuple:
    """(device ms, host ms) per hand-over."""
    from bench.feed_torch import to_torch

    for _ in range(5):  # warm-up: constants on the device, kernels loaded
        to_torch(chunks, n, cfg, into)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(SPIN_CYCLES)  # the host queues every rep meanwhile: device time only
    start.record()
    t0 = time.perf_counter()
    for _ in range(reps):
        to_torch(chunks, n, cfg, into)
    host_ms = 1000 * (time.perf_counter() - t0) / reps
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / reps, host_ms


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--chunk", type=int, default=16, help="clips per DALI chunk (gpu_batch)")
    ap.add_argument("--clip-len", type=int, default=16)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    ap.add_argument("--reps", type=int, default=100,
                    help="queued at once (CUDA's queue holds ~1,000 launches)")  # fmt: skip
    ap.add_argument("--loader-sms", type=int, default=2, help="0: every SM")
    args = ap.parse_args(argv)

    import torch

    from loader.greenctx import SmPartition
    from loader.handover import unavailable

    shape = (args.chunk, args.clip_len, args.size, args.size, 3)
    chunks = [torch.randint(0, 256, shape, dtype=torch.uint8, device="cuda")
              for _ in range(-(-args.batch // args.chunk))]  # fmt: skip
    memory = (args.batch, args.clip_len, args.size, args.size, 3)  # channels-last, as bench feed
    into = torch.empty(memory, dtype=getattr(torch, args.dtype), device="cuda")
    into = into.permute(0, 4, 1, 2, 3)
    torch.cuda.synchronize()
    result: dict[str, Any] = {"bench": "handover", "device": torch.cuda.get_device_name(),
                              "torch": torch.__version__, "batch": args.batch,
                              "chunks": len(chunks), "dtype": args.dtype, "reps": args.reps,
                              "kernel_unavailable": unavailable()}  # fmt: skip
    part = None
    if args.loader_sms:
        part = SmPartition(torch.cuda.current_device(), args.loader_sms, fine=True)
        stream = torch.cuda.ExternalStream(part.stream())
        result["stream"] = f"green context, {part.sms} of {part.device_sms} SMs"
    else:
        stream = torch.cuda.Stream()
        result["stream"] = "side stream, every SM"
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for handover in ("ops", "kernel"):
            cfg = SimpleNamespace(mean=ACTIVITYNET_MEAN, std=(1.0, 1.0, 1.0), dtype=args.dtype,
                                  handover=handover, clip_output=lambda: "uint8")  # fmt: skip
            device_ms, host_ms = _time(torch, chunks, args.batch, cfg, into, args.reps)
            result[f"{handover}_ms"] = round(device_ms, 4)
            result[f"{handover}_host_ms"] = round(host_ms, 4)
    stream.synchronize()
    result["kernel_vs_ops"] = round(result["kernel_ms"] / result["ops_ms"], 3)
    if part is not None:
        part.close()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
