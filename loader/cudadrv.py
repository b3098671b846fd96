"""The CUDA driver (libcuda) through ctypes, opened once for the modules that need it.

loader.cudasync sets the primary context's scheduling flag, loader.greenctx partitions the SMs,
loader.handover launches the hand-over kernel, and train.device checks that NVDEC decoding can
have a driver at all. They share this one handle (cuInit may be called by each: it is
idempotent) and check(); no build step, no dependency, and a machine without NVIDIA's driver gets
None.
"""

from __future__ import annotations

import ctypes
import functools


@functools.cache
def libcuda() -> ctypes.CDLL | None:
    """NVIDIA's driver library, or None where it cannot be loaded (CPU machines)."""
    try:
        return ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None


def device(device_id: int) -> ctypes.c_int | None:
    """The CUdevice of GPU `device_id` after cuInit, or None without a driver or that device."""
    cuda = libcuda()
    if cuda is None or cuda.cuInit(0) != 0:
        return None
    dev = ctypes.c_int()
    if cuda.cuDeviceGet(ctypes.byref(dev), device_id) != 0:
        return None
    return dev


def check(cuda: ctypes.CDLL, result: int, what: str, error: type[Exception]) -> None:
    """Raise `error("<what> failed: <CUDA's name for result>")` unless result is CUDA_SUCCESS."""
    if result != 0:
        name = ctypes.c_char_p()
        cuda.cuGetErrorName(result, ctypes.byref(name))
        err = name.value.decode() if name.value else f"error {result}"
        raise error(f"{what} failed: {err}")
