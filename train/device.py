"""Where the training runs: the device, and on the GPU the steps' own stream and SM partition."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import paddle

from loader.greenctx import PADDLE_HIGH, PADDLE_NORMAL
from train.install import gpu_build_problem, mixed_install

log = logging.getLogger(__name__)


# one step stream per (GPU, kind, SMs asked for the loader, split) for the whole run: a new stream
# each epoch would also get its own pool in Paddle's stream-safe allocator
_STREAMS: dict[tuple[int, str, int, bool], tuple[Any, int]] = {}


@contextlib.contextmanager
def compute_stream(
    device: str, kind: str = "side", loader_sms: int = 0, sm_fine: bool = True, strict: bool = True
) -> Iterator[None]:
    """On the GPU, run the steps on a non-blocking CUDA stream of their own.

    DALI's NVDEC reader converts decoded frames on the legacy default stream, which waits for all
    work on ordinary (blocking) streams, Paddle's default compute stream among them: every frame
    the loader converts would queue behind the training kernels already submitted. Paddle's
    `paddle.device.Stream` is created non-blocking, so steps issued on it never hold the
    decoder up (docs/BENCHMARKS.md, "Fed loader"). On the CPU, or with kind "default" (`ucf3d
    train --step-stream default`, to compare or to rule the stream out), this does nothing. Kind
    "high" makes the stream a high-priority one: where the step's kernels and the loader's (which
    DALI issues at the default priority) both wait for SMs, the step's blocks are started first.

    With `loader_sms` (`ucf3d train --loader-sms N`) the stream is created inside a CUDA green
    context holding all but N of the GPU's SMs (loader.greenctx, SM by SM with `sm_fine`): the
    training kernels never occupy those SMs, so the loader's per-frame kernels start at once
    instead of queueing behind them. Where that cannot be had (a driver before CUDA 12.4), it is
    an error when `strict` (the user asked for it), else a warning and the whole GPU.
    """
    if device != "gpu" or (kind == "default" and not loader_sms):
        yield
        return
    key = (gpu_device_id(), kind, loader_sms, sm_fine)
    if key not in _STREAMS:
        _STREAMS[key] = _step_stream(loader_sms, sm_fine, strict, kind == "high")
    stream, partitioned = _STREAMS[key]  # partitioned: the SMs actually left to the loader
    stream.wait_stream(paddle.device.current_stream())
    with paddle.device.stream_guard(stream):
        try:
            yield
        except Exception as e:
            hint = partition_hint(e, partitioned)
            if hint:
                raise RuntimeError(hint) from e
            raise
    stream.synchronize()


def _step_stream(loader_sms: int, sm_fine: bool, strict: bool, high: bool) -> tuple[Any, int]:
    """compute_stream's stream (in the green context with `loader_sms`), and the SMs it leaves."""
    stream, partitioned = None, 0
    priority = PADDLE_HIGH if high else PADDLE_NORMAL
    if loader_sms:
        from loader.greenctx import GreenContextError, shared_partition

        try:
            part = shared_partition(gpu_device_id(), loader_sms, sm_fine)
        except GreenContextError as e:
            if strict:
                raise RuntimeError(f"--loader-sms {loader_sms}: {e}") from e
            log.warning("training on every SM (%s); the NVDEC loader may be slowed", e)  # once
        else:
            with part.current():
                stream = paddle.device.Stream(priority=priority)  # made in the green context
            partitioned = part.device_sms - part.sms
    if stream is None:
        stream = paddle.device.Stream(priority=priority)
    return stream, partitioned


def gpu_device_id() -> int:
    """The GPU Paddle runs on ("gpu:N" -> N)."""
    return int(paddle.device.get_device().partition(":")[2] or 0)


def partition_hint(error: BaseException, loader_sms: int) -> str | None:
    """For a kernel that could not launch on the SM partition, the error plus what to do.

    Libraries that pick kernels from the whole device's properties can choose one wider than the
    partition (cuDNN engines with thread-block clusters did on an H200 when chosen on all SMs:
    "cluster misconfiguration"); they did not when they chose on the partition, as here. Should it
    still happen, `--loader-sms 0` trains on every SM.
    """
    text = str(error)
    if not loader_sms or not any(w in text.lower() for w in ("cudnn", "cluster", "launch")):
        return None
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return (f"{first} (the steps ran on all but {loader_sms} SMs, leaving those to the loader: "
            "`--loader-sms 0` trains on every SM)")  # fmt: skip


def use_device(device: str) -> None:
    """paddle.set_device, failing clearly where this Paddle build has no CUDA (start-up check).

    On the GPU, first asks CUDA for more hardware work queues (loader.workqueues: 32 fed the
    training better than CUDA's 8); the CLI asks before it imports Paddle, this covers callers of
    the library.
    """
    if device == "gpu":
        problem = gpu_build_problem(paddle.device.is_compiled_with_cuda(), paddle.__version__)
        if problem:
            raise RuntimeError(problem)
        from loader.workqueues import widen

        widen(gpu_device_id())
    mixed = mixed_install()
    if mixed:
        log.warning(mixed)
    paddle.set_device("gpu" if device == "gpu" else "cpu")


def check_gpu_decode(decode: str) -> None:
    """Decoding on the GPU needs NVIDIA's driver for DALI's NVDEC; say so instead of DALI's
    assert."""
    if decode == "cpu":
        return
    from loader.cudadrv import libcuda

    if libcuda() is None:
        raise RuntimeError(
            f"--decode {decode} needs an NVIDIA GPU and its driver (libcuda.so.1 cannot be "
            "loaded here); use --decode cpu"
        )
