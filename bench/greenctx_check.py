"""Does loader.greenctx confine work to its SMs? A check for a GPU machine; prints one JSON line.

    python -m bench.greenctx_check [--device 0]

Times the same matrix products (PyTorch, as the only CUDA framework on the benchmark machine) on an
ordinary stream, on a green-context stream made by `SmPartition.stream()`, and on a stream the CUDA
runtime creates while the green context is current (`SmPartition.current()`, the way Paddle's
`paddle.device.Stream()` gets one in `ucf3d train --loader-sms`). With half the SMs left out, the
partition's streams should take about twice as long; the runtime-made stream must belong to the
green context (cuStreamGetCtx), and cudaGetDevice must still name the device while it is current
(Paddle's device guard calls it before creating a stream).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import time
from pathlib import Path

import torch

from loader.greenctx import SmPartition


def _cudart() -> ctypes.CDLL:
    """The CUDA runtime PyTorch loaded (the same one a framework's own calls go through)."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        if "libcudart.so" in line:
            return ctypes.CDLL(line.split()[-1])
    return ctypes.CDLL("libcudart.so")


def _time(stream: torch.cuda.Stream, a: torch.Tensor, reps: int = 30) -> float:
    with torch.cuda.stream(stream):
        for _ in range(3):
            a @ a
        stream.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ a
        stream.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", type=int, default=0)
    dev = ap.parse_args().device
    torch.cuda.set_device(dev)
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    out: dict = {"bench": "greenctx_check", "gpu": torch.cuda.get_device_name(dev)}
    full = _time(torch.cuda.Stream(), a)
    sizes = {}
    for leave in (1, 4, 8, 12, 20):
        with SmPartition(dev, leave) as p:
            sizes[leave] = p.sms
    out["train_sms_when_leaving"] = sizes
    with SmPartition(dev, torch.cuda.get_device_properties(dev).multi_processor_count // 2) as half:
        out["half"] = {"train_sms": half.sms, "device_sms": half.device_sms}
        driver_made = torch.cuda.ExternalStream(half.stream())
        out["driver_stream_vs_full_time"] = round(_time(driver_made, a) / full, 3)
        rt, cuda = _cudart(), ctypes.CDLL("libcuda.so.1")
        handle, green_ctx, ctx, device = (ctypes.c_void_p(), ctypes.c_void_p(),
                                          ctypes.c_void_p(), ctypes.c_int(-1))  # fmt: skip
        with half.current():
            rt.cudaGetDevice(ctypes.byref(device))
            rt.cudaStreamCreateWithFlags(ctypes.byref(handle), 1)  # non-blocking, as Paddle's
            cuda.cuCtxGetCurrent(ctypes.byref(green_ctx))
        cuda.cuStreamGetCtx(handle, ctypes.byref(ctx))
        out["cudaGetDevice_while_current"] = device.value
        out["runtime_stream_in_green_ctx"] = bool(ctx.value) and ctx.value == green_ctx.value
        runtime_made = torch.cuda.ExternalStream(handle.value)
        out["runtime_stream_vs_full_time"] = round(_time(runtime_made, a) / full, 3)
        rt.cudaStreamDestroy(handle)
    out["expected_time_ratio"] = round(out["half"]["device_sms"] / out["half"]["train_sms"], 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
