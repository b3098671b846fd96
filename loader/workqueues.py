"""More hardware work queues for the loader's GPU work beside the training step: a measured default.

CUDA feeds the GPU through a fixed set of hardware work queues ("connections"): each stream is
mapped onto one of them, CUDA_DEVICE_MAX_CONNECTIONS of them per device (8 by default, at most
32). A green context (loader.greenctx) shares the primary context's queues (CUDA 12.4-13.0 have
no way to keep them apart).

Measured on an H200 beside the training step (docs/BENCHMARKS.md, "Eighth round"), 32 queues
against the default 8, fed / unfed: the eager step fed by NVDEC at short side 128, 0.946 against
0.903-0.915; by the hybrid at 1/8, 0.947-0.948 against 0.940; at short side 240 (48 pipelines),
0.936 against 0.848. The step alone does not change. The ninth round's lines got their 32 queues
from widen() itself (`cuda_work_queues` 32).

Why is open. The eighth round read it as DALI's kernels sharing a queue with the training stream
and waiting there behind the steps queued before them. A direct probe did not see that
(bench/queue_probe.py, "Tenth round"): on the H200 (driver 580), with 8 queues or 32, no tiny kernel
on any of 64 other streams, nor on the legacy default stream, waited behind four 40 ms kernels
queued on a stream of the training's kinds (side or green context, default or high priority). The
probe does not reproduce everything DALI does (its streams wait for each other's events: the
probe's `--pattern wait`, not yet run on a GPU), so the 32 queues stay as what measured best.

So `ucf3d train`, `ucf3d eval` and `ucf3d bench feed` ask for 32 queues whenever their steps run
on the GPU (whatever decodes: with the CPU path DALI still copies each batch in on streams of its
own), unless CUDA_DEVICE_MAX_CONNECTIONS is already set (the user's value is kept).
CUDA reads the variable when it creates a context, so it must be set before anything (Paddle,
DALI, PyTorch) creates the device's context; widen() says when it came too late.
"""

from __future__ import annotations

import ctypes
import logging
import os

from .cudadrv import device, libcuda

log = logging.getLogger(__name__)

ENV = "CUDA_DEVICE_MAX_CONNECTIONS"
WORK_QUEUES = 32  # CUDA's most


def widen(device_id: int = 0) -> str:
    """Set CUDA_DEVICE_MAX_CONNECTIONS to WORK_QUEUES unless it is set; the value in force.

    A value already set (by the user, or by an earlier call) is kept and returned as it is.
    Setting it where device_id's primary context already exists is too late for that context:
    logged, and returned as "32 (context already created)". On a machine without CUDA the
    variable is set all the same (harmless).
    """
    if os.environ.get(ENV):
        return os.environ[ENV]
    os.environ[ENV] = str(WORK_QUEUES)
    if _primary_active(device_id):
        log.warning("%s=%d set after the CUDA context of device %d was created: it applies to "
                    "contexts created later only; set it before starting", ENV, WORK_QUEUES,
                    device_id)  # fmt: skip
        return f"{WORK_QUEUES} (context already created)"
    log.info("%s=%d: more hardware work queues for the loader's GPU work", ENV, WORK_QUEUES)
    return str(WORK_QUEUES)


def _primary_active(device_id: int) -> bool:
    """Whether device_id's primary context exists (False without a CUDA driver)."""
    cuda, dev = libcuda(), device(device_id)
    if cuda is None or dev is None:
        return False
    flags, active = ctypes.c_uint(), ctypes.c_int()
    if cuda.cuDevicePrimaryCtxGetState(dev, ctypes.byref(flags), ctypes.byref(active)) != 0:
        return False
    return bool(active.value)
