"""How host threads wait for the GPU: the CUDA primary context's scheduling flag, set early.

CUDA's default ("auto") lets a thread that waits for the GPU spin on a core whenever there are more
cores than contexts. The NVDEC path runs dozens of threads that each wait for their own decoder
and kernels; spinning, they burn the host's cores while training is running, and the more the GPU
is loaded the longer they spin (docs/BENCHMARKS.md, "Fed loader"). "blocking" puts a waiting
thread to sleep until the GPU signals; "yield" spins but yields the core. The flag belongs to the
process's primary context, so it must be set before anything (Paddle, DALI, PyTorch) creates it;
set_schedule() says whether it took effect.

Measured (docs/BENCHMARKS.md, sweep C): on an H200 with 16 cores, "blocking" cut the fed loader's
host CPU use from ~13 to ~4 cores but also its rate (fed/unfed 0.81 -> 0.71): every wake-up adds
latency to the decoders' many small waits. "yield" measured like "auto". So "auto" stays the
default; the flag is a lever for hosts where cores, not decode latency, run short.
"""

from __future__ import annotations

import ctypes
import logging

from .cudadrv import device, libcuda

log = logging.getLogger(__name__)

SCHEDULES = {"auto": 0x0, "spin": 0x1, "yield": 0x2, "blocking": 0x4}  # CU_CTX_SCHED_*
_MASK = 0x7


def set_schedule(mode: str, device_id: int = 0) -> str:
    """Set the scheduling flag of device_id's primary context; the mode now in force.

    Returns "unavailable" where there is no CUDA driver (CPU machines), and the mode that holds
    when the context was already created with another one (CUDA keeps an active context's flag).
    """
    if mode not in SCHEDULES:
        raise ValueError(f"cuda sync mode must be one of {', '.join(SCHEDULES)}, got {mode!r}")
    cuda, dev = libcuda(), device(device_id)
    if cuda is None or dev is None:
        return "unavailable"
    flags, active = ctypes.c_uint(), ctypes.c_int()
    get_state = cuda.cuDevicePrimaryCtxGetState
    if get_state(dev, ctypes.byref(flags), ctypes.byref(active)) == 0 and not active.value:
        setter = (
            getattr(cuda, "cuDevicePrimaryCtxSetFlags_v2", None) or cuda.cuDevicePrimaryCtxSetFlags
        )
        new = (flags.value & ~_MASK) | SCHEDULES[mode]
        if setter(dev, ctypes.c_uint(new)) != 0:
            log.warning("could not set the CUDA scheduling flag to %s", mode)
    get_state(dev, ctypes.byref(flags), ctypes.byref(active))
    now = {v: k for k, v in SCHEDULES.items()}.get(flags.value & _MASK, hex(flags.value))
    if now != mode:
        log.warning("CUDA context of device %d already uses %s waits, not %s", device_id, now, mode)
    return now
