"""The hand-over alone on the GPU: the kernel (loader.handover) against the framework's ops.

    python -m bench.handover_probe [--batch 128] [--chunk 16] [--reps 200] [--loader-sms 2]

One batch as DALI hands it over (uint8 (chunk, T, H, W, 3) chunks on the device), normalised
`--reps` times by bench feed's stand-in hand-over (bench.feed_torch.to_torch) with each setting,
and (`--frame`) a batch of whole frames cropped, resized and normalised by the crop kernel
(loader.handover.crop_resize_into, LoaderConfig.gpu_resize "kernel"),
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
from collections.abc import Callable
from functools import partial
from types import SimpleNamespace
from typing import Any

import numpy as np

from loader.config import ACTIVITYNET_MEAN

SPIN_CYCLES = 2_000_000_000  # ~1 s at H200 clocks: longer than queuing the reps takes


def _time(torch: Any, handover: Callable[[], Any], reps: int) -> tuple:
    """(device ms, host ms) per hand-over."""
    for _ in range(5):  # warm-up: constants on the device, kernels loaded
        handover()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda._sleep(SPIN_CYCLES)  # the host queues every rep meanwhile: device time only
    start.record()
    t0 = time.perf_counter()
    for _ in range(reps):
        handover()
    host_ms = 1000 * (time.perf_counter() - t0) / reps
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / reps, host_ms


def _cropper(torch: Any, args: argparse.Namespace, into: Any) -> Callable[[], None]:
    """The crop hand-over of a batch of whole (T, H, W, 3) frames with Hara's corner crops
    (loader.handover.crop_resize_into, as bench feed's stand-in calls it, DLPack aside)."""
    from loader.handover import clip_sources, crop_resize_into

    h, w = (int(v) for v in args.frame.split("x"))
    shape = (args.chunk, args.clip_len, h, w, 3)
    chunks = [torch.randint(0, 256, shape, dtype=torch.uint8, device="cuda")
              for _ in range(-(-args.batch // args.chunk))]  # fmt: skip
    sources = clip_sources([(c.data_ptr(), tuple(c.shape)) for c in chunks], args.batch)
    rng = np.random.default_rng(0)
    side = rng.choice([1.0, 0.84, 0.71, 0.59, 0.5], args.batch) * min(h, w)
    y0, x0 = rng.uniform(0, h - side), rng.uniform(0, w - side)
    rois = np.stack([y0, x0, y0 + side, x0 + side], axis=1).astype(np.float32)
    stream = torch.cuda.current_stream().cuda_stream
    return partial(crop_resize_into, sources, rois, args.size, into.data_ptr(), ACTIVITYNET_MEAN,
                   (1.0, 1.0, 1.0), args.dtype, False, stream)  # fmt: skip


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
    ap.add_argument("--frame", default="128x170",
                    help="HxW of whole frames for the crop hand-over ('': none)")  # fmt: skip
    args = ap.parse_args(argv)

    import torch

    from bench.feed_torch import to_torch
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
            run = partial(to_torch, chunks, args.batch, cfg, into)
            device_ms, host_ms = _time(torch, run, args.reps)
            result[f"{handover}_ms"] = round(device_ms, 4)
            result[f"{handover}_host_ms"] = round(host_ms, 4)
        if args.frame:  # whole frames, cropped and resized by the kernel (gpu_resize "kernel")
            result["frame"] = args.frame
            device_ms, host_ms = _time(torch, _cropper(torch, args, into), args.reps)
            result["crop_ms"], result["crop_host_ms"] = round(device_ms, 4), round(host_ms, 4)
    stream.synchronize()
    result["kernel_vs_ops"] = round(result["kernel_ms"] / result["ops_ms"], 3)
    if part is not None:
        part.close()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
