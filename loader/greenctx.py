"""Keep SMs free for the loader: run the training step on a CUDA green context's subset of SMs.

Why: DALI's NVDEC reader maps and colour-converts every decoded frame with small kernels on CUDA's
legacy default stream, one frame after another, and each waits for a free SM. Beside a training
step whose kernels fill every SM, each of those tiny kernels queues behind a training kernel's
thread blocks, so the decoders idle (~30 % NVDEC use) and the loader delivers half its rate
(docs/BENCHMARKS.md, "Fed loader"). CUDA offers no priority below the default for the training
stream, and DALI 2.4 gives its reader no stream priority either. A green context (CUDA 12.4+)
confines the work of its streams to a partition of the SMs: the training step runs on
`device SMs - loader_sms` of them, and the loader's kernels (still in the primary context, free to
use every SM) always find the rest idle.

What the partition protects is the loader's pace, not the step: the loader's kernels slow the
step by their number (~0.18 us each on an H200), on the step's SMs or confined to the loader's
alike (bench/spill_probe.py, docs/BENCHMARKS.md "Thirteenth round"), and the step pays ~1.7 % for
the SMs it gives up. Without the partition the loader falls behind (0.89-0.90 fed at 128 there).

The partition keeps SMs apart, not the hardware work queues: a green context shares the primary
context's (loader.workqueues widens them to 32, which measured better: docs/BENCHMARKS.md,
"Eighth round").

A CUDA graph of the step must be captured on the partition's stream. Captured in the primary
context and replayed on the partition's stream, it ran on every SM: bench feed's graphed stand-in,
captured that way in rounds four to nine, lost nothing to the partition even at 116 SMs; captured
on the partition's stream it takes 1.9 % longer on 130 SMs and 5.2 % on 124, as the eager step
does (docs/BENCHMARKS.md, "Tenth round").

Two ways to get a stream in the partition, both through the driver API with ctypes (no build
step, no new dependency):
- `SmPartition.stream()`: a raw non-blocking stream made by cuGreenCtxStreamCreate, for frameworks
  that can wrap a foreign stream (`torch.cuda.ExternalStream`, the benchmark's stand-in);
- `SmPartition.current()`: the green context made current for the calling thread, so a framework
  that creates its streams with the runtime API (Paddle's `paddle.device.Stream`) creates them in
  the partition. Memory is shared with the primary context, so tensors move freely.

SM partitions come in an architecture's granularity (8 SMs on Hopper, so 128 of an H200's 132):
the training gets the largest share that leaves at least `loader_sms` free. `fine=True` splits SM
by SM, ignoring the GPU's hierarchy (130 of 132 leaving 2), at the cost of thread-block clusters
spanning it. Either way a framework must pick its kernels on the partition: cuDNN engines chosen
on the whole H200 can fail to launch on 128 SMs ("cluster misconfiguration", CUDA error 912),
while autotuning on the partition itself skips them (bench/greenctx_train_check.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
from collections.abc import Iterator

from .cudadrv import check, libcuda

log = logging.getLogger(__name__)

_SM = 1  # CU_DEV_RESOURCE_TYPE_SM
_GREEN_CTX_DEFAULT_STREAM = 0x1  # CU_GREEN_CTX_DEFAULT_STREAM
_STREAM_NON_BLOCKING = 0x1  # CU_STREAM_NON_BLOCKING
_SPLIT_IGNORE_SM_COSCHEDULING = 0x1  # CU_DEV_SM_RESOURCE_SPLIT_IGNORE_SM_COSCHEDULING
# CUdevResource: `type` (4 bytes) and 92 bytes of padding, then a union whose SM member starts with
# smCount. 144-152 bytes in the CUDA 12.4-13.x ABIs; a generous zeroed buffer holds any of them.
_RES_BYTES = 1024
_SM_COUNT_AT = 96
_NEEDED = (
    "cuDeviceGetDevResource",
    "cuDevSmResourceSplitByCount",
    "cuDevResourceGenerateDesc",
    "cuGreenCtxCreate",
    "cuGreenCtxDestroy",
    "cuGreenCtxStreamCreate",
    "cuCtxFromGreenCtx",
)


# where the training steps run on the GPU: a non-blocking stream of their own ("side"), the same at
# CUDA's high priority ("high": when both wait for SMs, the step's blocks go before the loader's,
# which DALI issues at the default priority), or the framework's default stream
STEP_STREAMS = ("side", "high", "default")
PADDLE_HIGH, PADDLE_NORMAL = 1, 2  # Paddle's stream priorities (CUDA's -1 and 0)
DEFAULT_LOADER_SMS = 2  # measured best on an H200 (docs/BENCHMARKS.md, "Fed loader", sweeps F-H)


def default_loader_sms(device: str, decode: str, stream: str = "side") -> int:
    """SMs to leave to the loader when the user did not say: some when training on the GPU from
    NVDEC (whose per-frame kernels compete with the step's) on the steps' own stream, none
    otherwise (CPU decoding puts no kernels on the SMs; the partition's stream is a side stream,
    so `stream="default"`, Paddle's own, has none; "side" and "high" are side streams)."""
    nvdec = device == "gpu" and decode in ("gpu", "hybrid")
    return DEFAULT_LOADER_SMS if nvdec and stream != "default" else 0


class GreenContextError(RuntimeError):
    """The driver has no green contexts, or refused the partition."""


@functools.cache  # a failure is not cached: it raises
def _driver() -> ctypes.CDLL:
    cuda = libcuda()
    if cuda is None:
        raise GreenContextError("no CUDA driver (libcuda.so.1 cannot be loaded)")
    missing = [name for name in _NEEDED if not hasattr(cuda, name)]
    if missing:
        raise GreenContextError(
            f"this CUDA driver has no green contexts (needs CUDA 12.4+; missing {missing[0]})"
        )
    ptr = ctypes.c_void_p
    cuda.cuGreenCtxCreate.argtypes = [ctypes.POINTER(ptr), ptr, ctypes.c_int, ctypes.c_uint]
    cuda.cuGreenCtxDestroy.argtypes = [ptr]
    cuda.cuGreenCtxStreamCreate.argtypes = [ctypes.POINTER(ptr), ptr, ctypes.c_uint, ctypes.c_int]
    cuda.cuCtxFromGreenCtx.argtypes = [ctypes.POINTER(ptr), ptr]
    cuda.cuCtxPushCurrent_v2.argtypes = [ptr]
    cuda.cuCtxPopCurrent_v2.argtypes = [ctypes.POINTER(ptr)]
    cuda.cuStreamDestroy_v2.argtypes = [ptr]
    return cuda


def unavailable() -> str | None:
    """Why green contexts cannot be had on this machine, or None when the driver has them."""
    try:
        _driver()
    except GreenContextError as e:
        return str(e)
    return None


def _check(cuda: ctypes.CDLL, result: int, what: str) -> None:
    check(cuda, result, what, GreenContextError)


def _sm_count(resource: ctypes.Array) -> int:
    return int.from_bytes(bytes(resource[_SM_COUNT_AT : _SM_COUNT_AT + 4]), "little")


class SmPartition:
    """A green context on `device_id` holding all but (at least) `loader_sms` of its SMs (SM by
    SM with `fine`, else in the GPU's partition granularity).

    `sms` is what the partition got, `device_sms` what the device has. Close it (or use it as a
    context manager) after the streams made from it are done with.
    """

    def __init__(self, device_id: int, loader_sms: int, fine: bool = False) -> None:
        if loader_sms < 1:
            raise ValueError(f"loader_sms must be >= 1, got {loader_sms}")
        cuda = self._cuda = _driver()
        _check(cuda, cuda.cuInit(0), "cuInit")
        dev = ctypes.c_int()
        _check(cuda, cuda.cuDeviceGet(ctypes.byref(dev), device_id), f"cuDeviceGet({device_id})")
        whole = ctypes.create_string_buffer(_RES_BYTES)
        _check(cuda, cuda.cuDeviceGetDevResource(dev, whole, _SM), "cuDeviceGetDevResource")
        self.device_sms = _sm_count(whole)
        flags = _SPLIT_IGNORE_SM_COSCHEDULING if fine else 0
        group, sms, self._rest = self._split(whole, self.device_sms - loader_sms, flags)
        self._dev, self._rest_green = dev, None
        self._green, self.sms, self._streams = self._create(group), sms, []
        log.info("training on %d of %d SMs (green context); %d left to the loader",
                 sms, self.device_sms, self.device_sms - sms)  # fmt: skip

    def _create(self, group: ctypes.Array) -> ctypes.c_void_p:
        """A green context on the SM resource `group`."""
        cuda, desc, ctx = self._cuda, ctypes.c_void_p(), ctypes.c_void_p()
        _check(cuda, cuda.cuDevResourceGenerateDesc(ctypes.byref(desc), group, 1),
               "cuDevResourceGenerateDesc")  # fmt: skip
        made = cuda.cuGreenCtxCreate(ctypes.byref(ctx), desc, self._dev, _GREEN_CTX_DEFAULT_STREAM)
        _check(cuda, made, "cuGreenCtxCreate")
        return ctx

    def _split(self, whole: ctypes.Array, most: int,
               flags: int) -> tuple[ctypes.Array, int, ctypes.Array]:  # fmt: skip
        """The largest SM group of at most `most` SMs the driver's granularity allows, its size,
        and the SMs it leaves."""
        cuda = self._cuda
        for want in range(most, 0, -1):
            group = ctypes.create_string_buffer(_RES_BYTES)
            rest = ctypes.create_string_buffer(_RES_BYTES)
            n = ctypes.c_uint(1)
            split = cuda.cuDevSmResourceSplitByCount(
                group, ctypes.byref(n), whole, rest, flags, want
            )
            if split != 0:
                continue  # not a size this architecture can make
            got = _sm_count(group)
            if n.value == 1 and 0 < got <= most:
                return group, got, rest
        raise GreenContextError(
            f"cannot leave {self.device_sms - most} of {self.device_sms} SMs free: "
            "no smaller SM partition is possible on this GPU"
        )

    def summary(self) -> dict[str, int]:
        return {"train_sms": self.sms, "device_sms": self.device_sms}

    def stream(self, priority: int = 0) -> int:
        """A new non-blocking stream in the partition (a raw CUstream handle, owned here).

        `priority`: CUDA's convention, lower is sooner (-1 = high, as PyTorch's and Paddle's "high";
        out of the device's range it is clamped).
        """
        return self._new_stream(self._green, priority)

    def rest_stream(self, priority: int = 0) -> int:
        """A new non-blocking stream on the SMs the partition leaves free (a green context of
        their own, made on first use): work queued there cannot take the training's SMs.

        DALI's reader cannot be moved there (it works in the primary context, free to use every
        SM); the hand-over kernel can, one batch ahead (LoaderConfig.handover_stream "rest"), and
        bench/spill_probe.py uses it to measure what confining such work would be worth.
        """
        return self._new_stream(self._rest_context(), priority)

    def _rest_context(self) -> ctypes.c_void_p:
        if self._rest_green is None:
            self._rest_green = self._create(self._rest)
        return self._rest_green

    def _new_stream(self, green: ctypes.c_void_p, priority: int) -> int:
        """A non-blocking stream of green context `green`, owned here (close() destroys it)."""
        handle = ctypes.c_void_p()
        made = self._cuda.cuGreenCtxStreamCreate(
            ctypes.byref(handle), green, _STREAM_NON_BLOCKING, priority
        )
        _check(self._cuda, made, "cuGreenCtxStreamCreate")
        self._streams.append(handle)
        return int(handle.value or 0)

    @contextlib.contextmanager
    def current(self, rest: bool = False) -> Iterator[None]:
        """The green context current for this thread: streams the runtime API creates meanwhile
        (e.g. `paddle.device.Stream()`) belong to the partition (`rest`: to the SMs it leaves)."""
        cuda, ctx = self._cuda, ctypes.c_void_p()
        green = self._rest_context() if rest else self._green
        _check(cuda, cuda.cuCtxFromGreenCtx(ctypes.byref(ctx), green), "cuCtxFromGreenCtx")
        _check(cuda, cuda.cuCtxPushCurrent_v2(ctx), "cuCtxPushCurrent")
        try:
            yield
        finally:
            popped = ctypes.c_void_p()
            _check(cuda, cuda.cuCtxPopCurrent_v2(ctypes.byref(popped)), "cuCtxPopCurrent")

    def close(self) -> None:
        """Destroy the streams made by stream() and the green context (after their work is done)."""
        for handle in self._streams:
            self._cuda.cuStreamSynchronize(handle)
            self._cuda.cuStreamDestroy_v2(handle)
        self._streams = []
        for green in (self._green, self._rest_green):
            if green:
                self._cuda.cuGreenCtxDestroy(green)
        self._green = self._rest_green = None

    def __enter__(self) -> SmPartition:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_IN_USE: dict[int, SmPartition] = {}  # device -> the partition shared_partition made last


@functools.cache
def shared_partition(device_id: int, loader_sms: int, fine: bool = False) -> SmPartition:
    """One partition per (device, loader_sms) for the process's lifetime: epochs and phases reuse
    it instead of creating a green context each time."""
    _IN_USE[device_id] = SmPartition(device_id, loader_sms, fine)
    return _IN_USE[device_id]


def partition_in_use(device_id: int) -> SmPartition | None:
    """The partition the training on `device_id` runs on (shared_partition's latest), if any:
    the loader's hand-over stream is then made in it, on the training's SMs
    (LoaderConfig.handover_stream "side"), or on the SMs it leaves ("rest")."""
    return _IN_USE.get(device_id)
