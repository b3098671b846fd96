"""DALI outputs -> paddle.Tensor through DLPack (zero-copy; DALI's Paddle plugin needs a GPU).

Paddle's `from_dlpack` passes Paddle's current stream to DALI's `__dlpack__`, so the clips are
ready on the stream that will read them, whichever stream the training step runs on. Outputs in
"uint8" form (FHWC, see loader.augment) are normalised here, on the consumer's device and stream:
transpose to (N, 3, T, H, W), (x - mean) / std, cast to the configured dtype; on the GPU in one
kernel per chunk (loader.handover), else (or with handover "ops") with Paddle's own ops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .backend import Frames
from .handover import clip_sources, crop_resize_into, frame_parts, normalize_into, use_kernel
from .source import LoaderError

if TYPE_CHECKING:
    import paddle

    from .config import LoaderConfig

_CONSTANTS: dict[tuple, tuple[Any, Any]] = {}  # (place, mean, std, dtype) -> mean, 1/std or None


def _import(output: Any) -> paddle.Tensor:
    import paddle

    if not hasattr(output, "__dlpack__") and hasattr(output, "as_tensor"):
        output = output.as_tensor()
    return paddle.utils.dlpack.from_dlpack(output)


def to_paddle(output: Any, n: int | None = None, cfg: LoaderConfig | None = None) -> paddle.Tensor:
    """A dense DALI TensorList / Tensor (CPU or GPU) as a paddle.Tensor sharing its memory.

    DALI TensorLists have no `__dlpack__`; their `.as_tensor()` view of a uniform batch does.
    With DALI's default (dynamic) executor the buffer lives as long as a reference to it does, so
    the Paddle tensor stays valid after the pipeline moves on.

    Paddle is imported here, on first use, so the loader runs (and benchmarks) without it.
    A list of outputs (the GPU backend's per-pipeline chunks of one batch, the hybrid backend's
    GPU chunks and CPU part) is concatenated on the device of the first (a CPU part is copied
    there); `n` keeps the first n samples (a batch's last chunk may be padded). With `cfg` and
    uint8 output, the clips are normalised (normalize()).
    """
    import paddle

    if isinstance(output, Frames):  # whole NVDEC frames: the kernel crops them (gpu_resize)
        return _cropped(output, n, cfg)
    parts = [_import(o) for o in (output if isinstance(output, list) else [output])]
    first = parts[0].place
    if first.is_gpu_place():
        parts = [p if p.place.is_gpu_place() else p.cuda() for p in parts]
    if (cfg is not None and cfg.clip_output() == "uint8" and _allocates_on(first)
            and use_kernel(cfg.handover)):  # fmt: skip
        return _by_kernel(parts, n, cfg)
    tensor = parts[0] if len(parts) == 1 else paddle.concat(parts, axis=0)
    if n is not None and tensor.shape[0] != n:
        tensor = tensor[:n]
    if cfg is not None and cfg.clip_output() == "uint8":
        tensor = normalize(tensor, cfg.mean, cfg.std, cfg.dtype)
    return tensor


def _by_kernel(parts: list[paddle.Tensor], n: int | None, cfg: LoaderConfig) -> paddle.Tensor:
    """uint8 (N, T, H, W, 3) GPU chunks -> one normalised (n, 3, T, H, W) tensor, one kernel
    per chunk on Paddle's current stream (loader.handover), as normalize() computes it."""
    import paddle

    n = sum(p.shape[0] for p in parts) if n is None else n
    t, h, w = parts[0].shape[1:4]
    out = paddle.empty([n, 3, t, h, w], dtype=cfg.dtype)
    dense = [p.contiguous() for p in parts]  # (DALI's are): held until the kernels are queued
    stream = _raw_stream(paddle.device.current_stream())
    normalize_into([(p.data_ptr(), p.shape[0]) for p in dense], n, out.data_ptr(), t * h * w,
                   cfg.mean, cfg.std, cfg.dtype, True, stream)  # fmt: skip
    return out


def _cropped(frames: Frames, n: int | None, cfg: LoaderConfig | None) -> paddle.Tensor:
    """Whole uint8 NVDEC frames -> the normalised (n, 3, T, size, size) batch: each clip's crop
    window resized, flipped and normalised by one kernel per 32 clips on Paddle's current
    stream (loader.handover.crop_resize_into), planar."""
    import paddle

    if cfg is None:
        raise ValueError("whole frames need the loader's config to be cropped")
    parts = [_import(p) for c in frames.chunks for p in frame_parts(c)]
    place = parts[0].place
    if not _allocates_on(place):
        raise LoaderError(f"gpu_resize 'kernel': the frames are on {place}, Paddle allocates on "
                          f"{paddle.get_device()}; train on the loader's GPU")  # fmt: skip
    n = len(frames.rois) if n is None else n
    sources = clip_sources([(p.data_ptr(), p.shape) for p in parts], n)
    out = paddle.empty([n, 3, sources[0][1], cfg.size, cfg.size], dtype=cfg.dtype)
    stream = _raw_stream(paddle.device.current_stream())
    crop_resize_into(sources, frames.rois[:n], cfg.size, out.data_ptr(), cfg.mean, cfg.std,
                     cfg.dtype, True, stream)  # fmt: skip
    return out


def _allocates_on(place: Any) -> bool:
    """Whether `place` is the GPU where Paddle allocates (paddle.empty), so that the hand-over
    kernel can write there."""
    import paddle

    return place.is_gpu_place() and paddle.get_device() == f"gpu:{place.gpu_device_id()}"


def _raw_stream(stream: Any) -> int:
    """A paddle.device.Stream's CUDA stream handle: the CUDA stream protocol where this Paddle
    has it, else its CUDA stream's own attribute (Paddle before the protocol)."""
    if hasattr(stream, "__cuda_stream__"):
        return int(stream.__cuda_stream__()[1])
    return int(stream.stream_base.cuda_stream)


def normalize(
    clips: paddle.Tensor, mean: tuple[float, ...], std: tuple[float, ...], dtype: str
) -> paddle.Tensor:
    """(N, T, H, W, 3) uint8 -> (N, 3, T, H, W) `dtype`: (x - mean) / std on 0-255 values.

    With Paddle's own ops: on the CPU, and on the GPU where the hand-over kernel is not used
    (handover "ops", or a driver that cannot load it; loader.handover does it in one kernel).
    This runs on the training stream between steps, so it does as little as it can there: the
    transpose on uint8, one cast, the subtraction and (only when some std is not 1; Hara's recipe
    divides by nothing) the division, all in `dtype` on the GPU. That is 3 kernels writing 1-2
    bytes a value instead of 5 through float32, ~4x less memory traffic (docs/BENCHMARKS.md,
    "Ninth round"). In float16 the mean is rounded to float16 first (at most 1/32 off on 0-255).
    On the CPU, which has no float16 kernels, the arithmetic is in float32.
    """
    work = dtype if clips.place.is_gpu_place() else "float32"
    key = (str(clips.place), mean, std, work)
    if key not in _CONSTANTS:
        inv = 1 / np.array(std) if any(s != 1 for s in std) else None
        _CONSTANTS[key] = (
            _per_channel(np.array(mean), clips.place, work),
            None if inv is None else _per_channel(inv, clips.place, work),
        )
    m, inv_std = _CONSTANTS[key]
    x = clips.transpose([0, 4, 1, 2, 3]).astype(work) - m  # (N, 3, T, H, W)
    if inv_std is not None:
        x = x * inv_std
    return x if work == dtype else x.astype(dtype)


def _per_channel(values: np.ndarray, place: Any, dtype: str) -> paddle.Tensor:
    """3 values as a (1, 3, 1, 1, 1) `dtype` tensor on `place` (rounded from float32)."""
    import paddle

    shape = (1, 3, 1, 1, 1)
    return paddle.to_tensor(values.astype(np.float32).reshape(shape), place=place).astype(dtype)


class Holder:
    """Keeps DALI's GPU outputs alive until the consumer's stream has finished with them.

    A DALI output handed over through DLPack is read later, asynchronously, on the consumer's
    stream (by the normalisation, or by the step itself for "float" outputs), while the host has
    already moved on; dropping the last reference would let DALI reuse the memory under a kernel
    still to read it. So each output is held until an event, recorded on the consumer's stream
    when the *next* batch is handed over (after the previous step was queued), has completed.
    Nothing here waits: finished entries are let go as new batches arrive.
    """

    def __init__(self, new_event: Callable[[], Any] | None = None) -> None:
        self._new_event = new_event  # () -> an event with record(), query(), synchronize()
        self._held: list[list[Any]] = []  # [output, event or None], oldest first

    def hold(self, output: Any, on_gpu: bool) -> None:
        if not on_gpu:
            return  # CPU outputs are read synchronously (normalised or copied) before we return
        if self._new_event is None:
            import paddle

            self._new_event = paddle.device.Event
        event = self._new_event()
        event.record()  # on the current stream: after the step on the previous batch
        for entry in self._held:
            if entry[1] is None:
                entry[1] = event
        self._held = [e for e in self._held if e[1] is None or not e[1].query()]
        self._held.append([output, None])

    def release(self) -> None:
        """Wait for the consumer's stream, then let everything go (end of the loader)."""
        for _, event in self._held:
            if event is not None:
                event.synchronize()
        if self._held and self._held[-1][1] is None:  # the newest: wait for the whole stream
            event = self._new_event()
            event.record()
            event.synchronize()
        self._held.clear()


def labels_to_paddle(labels: np.ndarray, pinned: bool = False) -> paddle.Tensor:
    """int64 (N,) labels on the CPU (the training loop moves them with the clips).

    `pinned`: in page-locked memory, so that the move to the GPU is asynchronous (from pageable
    memory it would wait for the stream, a host synchronisation every step).
    """
    import paddle

    place = paddle.CUDAPinnedPlace() if pinned else paddle.CPUPlace()
    return paddle.to_tensor(np.asarray(labels, np.int64), place=place)
