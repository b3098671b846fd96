"""The GPU hand-over in one CUDA kernel per chunk (loader/kernels/handover.cu), for any framework.

DALI hands a batch over as uint8 (N, T, H, W, 3) chunks. Normalising them with a framework's own
ops (loader.bridge.normalize) takes 3-4 kernels on the training stream between two steps —
concatenate, transpose, cast, subtract — that write and read each value several times (~0.48 ms
a batch of 128 on an H200, ~0.8 % of the step). The kernel reads each byte once and writes each
normalised value once, into the tensor the step reads, in the framework's layout: planar
(N, C, T, H, W) for Paddle, channels-last for PyTorch's stand-in. Frameworks only allocate the
output and name their current stream; this module launches through the driver (loader.cudadrv),
so neither a compiler nor a framework extension is needed.

On the NVDEC path DALI can hand the whole decoded frames over instead (LoaderConfig.gpu_resize,
"auto" by default): then one kernel per 32 clips (`crop_resize_into`) crops each clip's window out
of its frames, resizes it bilinearly (as DALI's fn.resize would), flips and normalises it in the
same pass, so DALI's two resampling kernels a chunk no longer run beside the training step
(docs/BENCHMARKS.md, twelfth round).

The kernels ship as PTX, which the driver compiles for the GPU at first use (ISA 7.0, sm_70: any
driver from CUDA 12.0 on, V100 to H200 and later). Rebuild it after editing the .cu with
`python -m loader.kernels` (needs nvcc; the test suite checks that the PTX is the .cu's).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import math
import re
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .cudadrv import check, libcuda

log = logging.getLogger(__name__)
KERNELS = Path(__file__).with_name("kernels")
SOURCE, PTX = KERNELS / "handover.cu", KERNELS / "handover.ptx"
DTYPES = {"float16": np.float16, "float32": np.float32}  # what the kernel writes
THREADS = 256
MAX_CLIPS = 65535  # a launch's clips: the grid's y dimension
CROP_CLIPS = 32  # clips a crop_resize launch describes (its CropClips argument, handover.cu)
CROP_BLOCK = (128, 2)  # crop_resize's threads: columns x rows of output pixels
CROP_ROWS_EACH = 4  # output rows a crop_resize thread walks (its column's sampling reused)


class _CropClip(ctypes.Structure):
    """handover.cu's CropClip: one clip's frames and crop window (32 bytes)."""

    _fields_ = [("src", ctypes.c_uint64), ("h", ctypes.c_int), ("w", ctypes.c_int),
                ("y0", ctypes.c_float), ("x0", ctypes.c_float),
                ("sy", ctypes.c_float), ("sx", ctypes.c_float)]  # fmt: skip


class _CropClips(ctypes.Structure):
    _fields_ = [("c", _CropClip * CROP_CLIPS)]


class HandoverError(RuntimeError):
    """The driver could not load or launch the hand-over kernel."""


def source_digest(source: Path = SOURCE) -> str:
    return hashlib.sha256(source.read_bytes()).hexdigest()


def build_ptx(nvcc: str = "nvcc", source: Path = SOURCE) -> str:
    """The PTX of handover.cu (or another kernel source), as committed: compiled for compute_75
    (the oldest CUDA 13's nvcc knows), then declared ISA 7.0 / sm_70 (it uses nothing newer),
    headed by the source's hash."""
    made = subprocess.run(
        [nvcc, "-ptx", "-arch=compute_75", "-O3", str(source), "-o", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    ptx = re.sub(r"(?m)^\.version .*$", ".version 7.0", made.stdout, count=1)
    ptx = re.sub(r"(?m)^\.target .*$", ".target sm_70", ptx, count=1)
    return f"// {source.name} sha256 {source_digest(source)}\n{ptx}"


@functools.cache  # a failure raises, and is not cached
def _kernels() -> dict[str, ctypes.c_void_p]:
    """The kernels by name, loaded once per process, context-less (cuLibraryLoadData,
    CUDA 12.0+): a launch runs in its stream's context, a green context's included."""
    cuda = libcuda()
    if cuda is None:
        raise HandoverError("no CUDA driver (libcuda.so.1 cannot be loaded)")
    if not hasattr(cuda, "cuLibraryLoadData"):
        raise HandoverError("this CUDA driver cannot load context-less kernels (needs CUDA 12.0+)")
    ptr = ctypes.c_void_p
    cuda.cuLibraryLoadData.argtypes = [ctypes.POINTER(ptr), ctypes.c_char_p, ptr, ptr,
                                       ctypes.c_uint, ptr, ptr, ctypes.c_uint]  # fmt: skip
    cuda.cuLibraryGetKernel.argtypes = [ctypes.POINTER(ptr), ptr, ctypes.c_char_p]
    cuda.cuLaunchKernel.argtypes = [ptr, *[ctypes.c_uint] * 7, ptr, ctypes.POINTER(ptr), ptr]
    _check(cuda, cuda.cuInit(0), "cuInit")
    library = ptr()
    ptx = PTX.read_bytes() + b"\0"
    loaded = cuda.cuLibraryLoadData(ctypes.byref(library), ptx, None, None, 0, None, None, 0)
    _check(cuda, loaded, f"loading {PTX.name}")
    kernels = {}
    for dtype in DTYPES:
        for form in ("handover", "handover4", "crop_resize"):
            kernel, name = ptr(), f"{form}_{dtype}"
            found = cuda.cuLibraryGetKernel(ctypes.byref(kernel), library, name.encode())
            _check(cuda, found, name)
            kernels[name] = kernel
    return kernels


@functools.cache  # asked every batch: a kernel that failed to load is not tried again
def unavailable() -> str | None:
    """Why the kernel cannot run here (no driver, too old a driver), or None when it can."""
    try:
        _kernels()
    except HandoverError as e:
        return str(e)
    return None


def use_kernel(handover: str) -> bool:
    """Whether a consumer normalises with the kernel: asked for ("kernel", LoaderConfig.handover)
    and runnable here; a fallback to the framework's ops is logged, once."""
    if handover != "kernel":
        return False
    why_not = unavailable()
    if why_not:
        _warn_once(why_not)
    return why_not is None


@functools.cache
def _warn_once(why_not: str) -> None:
    log.warning("normalising clips with the framework's ops: %s", why_not)


def _check(cuda: ctypes.CDLL, result: int, what: str) -> None:
    check(cuda, result, what, HandoverError)


def rounded(values: Sequence[float], dtype: str) -> list[float]:
    """`values` as the output dtype holds them (the framework path rounds its mean so too)."""
    return [float(v) for v in np.asarray(values, np.float32).astype(DTYPES[dtype])]


@functools.cache  # the same for every batch of a run
def _constants(mean: tuple[float, ...], std: tuple[float, ...], dtype: str) -> tuple:
    """The kernels' mean and 1/std arguments, rounded as `dtype` (which they must write) holds
    them."""
    if dtype not in DTYPES:
        raise ValueError(f"the hand-over kernel writes {tuple(DTYPES)}, not {dtype}")
    return tuple(ctypes.c_float(v) for v in (*rounded(mean, dtype),
                                             *rounded([1 / v for v in std], dtype)))  # fmt: skip


def launches(
    parts: Sequence[tuple[int, int]], n: int, out: int, plane: int
) -> list[tuple[str, int, int, int, int]]:
    """The launches that normalise the first `n` clips of `parts` into `out`: (kernel form,
    source address, clips, first clip in out, grid x) each, in batch order.

    "handover4" (4 pixels a thread) where whole groups of 4 fit a clip and its vector accesses
    align (source 4 bytes, out 16), else "handover"; at most MAX_CLIPS clips a launch.
    """
    planned, first = [], 0
    for address, held in parts:
        clips = min(held, n - first)
        if clips <= 0:
            break
        wide = plane % 4 == 0 and address % 4 == 0 and out % 16 == 0
        grid_x = min(math.ceil(plane / (4 if wide else 1) / THREADS), 65535)
        for at in range(0, clips, MAX_CLIPS):
            count = min(MAX_CLIPS, clips - at)
            source = address + at * plane * 3
            planned.append(("handover4" if wide else "handover", source, count, first + at, grid_x))
        first += clips
    if first < n:
        raise ValueError(f"{first} clips in the parts, {n} asked for")
    return planned


def normalize_into(
    parts: Sequence[tuple[int, int]],
    n: int,
    out: int,
    plane: int,
    mean: Sequence[float],
    std: Sequence[float],
    dtype: str,
    planar: bool,
    stream: int,
) -> None:
    """Queue (x - mean) / std of the first `n` clips of uint8 (clips, T, H, W, 3) `parts` into
    the tensor at `out`; nothing here waits for the GPU.

    parts: (device address, clips) per chunk, in batch order, each contiguous (a batch's last
    chunk may hold padding past n); out: the address of the batch's (n, 3, T, H, W) `dtype`
    tensor, planar (in that memory order) or channels-last ((n, T, H, W, 3) memory); plane:
    T * H * W; stream: the raw CUDA stream the consumer reads `out` on, which must already wait
    for the parts (DLPack's hand-over does that).
    """
    constants = _constants(tuple(mean), tuple(std), dtype)
    planned = launches(parts, n, out, plane)
    kernels = _kernels()
    for form, source, count, first, grid_x in planned:
        args = [ctypes.c_void_p(source), ctypes.c_void_p(out), ctypes.c_int(plane),
                ctypes.c_int(first), *constants, ctypes.c_int(int(planar))]  # fmt: skip
        _launch(kernels[f"{form}_{dtype}"], (grid_x, count), (THREADS, 1), args, stream)


def frame_parts(chunk: Any) -> list[Any]:
    """A DALI TensorListGPU of whole frames as what DLPack can hand over: the dense chunk
    (`as_tensor()`) where its clips share a shape, else its clips one by one."""
    try:
        return [chunk.as_tensor()]
    except RuntimeError:  # clips of different sizes (videos of different resolutions)
        return [chunk[i] for i in range(len(chunk))]


def clip_sources(
    parts: Sequence[tuple[int, Sequence[int]]], n: int
) -> list[tuple[int, int, int, int]]:
    """(address, frames, height, width) of each of the first `n` clips held by `parts`, in
    batch order: (device address, shape) each, shape (clips, T, H, W, 3) for a dense chunk or
    (T, H, W, 3) for one clip (a chunk whose clips differ in size comes sample by sample)."""
    out: list[tuple[int, int, int, int]] = []
    for address, shape in parts:
        if len(shape) == 4:
            shape = (1, *shape)
        if len(shape) != 5 or shape[4] != 3:
            raise ValueError(f"frames of shape {tuple(shape)}: (clips, T, H, W, 3) expected")
        count, t, h, w, _ = (int(v) for v in shape)
        out += [(address + i * t * h * w * 3, t, h, w) for i in range(count)]
        if len(out) >= n:
            return out[:n]
    raise ValueError(f"{len(out)} clips in the parts, {n} asked for")


def crop_launches(
    sources: Sequence[tuple[int, int, int, int]], rois: np.ndarray, size: int
) -> list[tuple[int, int, _CropClips]]:
    """The crop_resize launches for clips `sources` (clip_sources) with windows `rois`: (first
    clip, clips, their packed descriptions) each, at most CROP_CLIPS clips a launch.

    rois: (n, 4) y0, x0, y1, x1 per clip in source pixels, a flip folded in (x1 < x0:
    loader.augment.flip_folded); each output pixel steps (y1 - y0) / size, (x1 - x0) / size.
    """
    rois = np.asarray(rois, np.float32).reshape(-1, 4)
    if len(rois) != len(sources):
        raise ValueError(f"{len(rois)} crop windows for {len(sources)} clips")
    planned = []
    for first in range(0, len(sources), CROP_CLIPS):
        packed = _CropClips()
        count = min(CROP_CLIPS, len(sources) - first)
        for k in range(count):
            (address, _, h, w), (y0, x0, y1, x1) = sources[first + k], rois[first + k]
            packed.c[k] = _CropClip(address, h, w, y0, x0, (y1 - y0) / size, (x1 - x0) / size)
        planned.append((first, count, packed))
    return planned


def crop_resize_into(
    sources: Sequence[tuple[int, int, int, int]],
    rois: np.ndarray,
    size: int,
    out: int,
    mean: Sequence[float],
    std: Sequence[float],
    dtype: str,
    planar: bool,
    stream: int,
) -> None:
    """Queue, for each clip of `sources` (clip_sources: whole uint8 frames), its crop window
    `rois` resized to size x size (bilinear, as DALI's fn.resize; rounded as DALI's uint8
    output is) and normalised, into the (n, 3, T, size, size) `dtype` tensor at `out`
    (planar or channels-last, as normalize_into); nothing here waits for the GPU. The stream
    must already wait for the frames (DLPack's hand-over does that)."""
    constants = _constants(tuple(mean), tuple(std), dtype)
    frames = {t for _, t, _, _ in sources}
    if len(frames) != 1:
        raise ValueError(f"clips of {sorted(frames)} frames in one batch: one length expected")
    t = frames.pop()
    planned = crop_launches(sources, rois, size)
    kernel = _kernels()[f"crop_resize_{dtype}"]
    grid_x = min(math.ceil(t * size / (CROP_BLOCK[1] * CROP_ROWS_EACH)), 65535)
    for first, count, packed in planned:
        args = [packed, ctypes.c_void_p(out), ctypes.c_int(t), ctypes.c_int(size),
                ctypes.c_int(first), *constants, ctypes.c_int(int(planar))]  # fmt: skip
        _launch(kernel, (grid_x, count), CROP_BLOCK, args, stream)


def _launch(
    kernel: ctypes.c_void_p, grid: tuple[int, int], block: tuple[int, int], args: list, stream: int
) -> None:
    """Queue `kernel` on `stream` with its arguments (ctypes values, in the kernel's order)."""
    _launcher(kernel, grid, block, args)(stream)


def _launcher(
    kernel: ctypes.c_void_p, grid: tuple[int, int], block: tuple[int, int], args: list
) -> Callable[[int], None]:
    """`kernel` with its arguments (ctypes values, in the kernel's order) marshalled once: each
    call queues it on the raw CUDA stream it is given (bench.spill_probe launches one tens of
    thousands of times a second)."""
    cuda = libcuda()
    params = (ctypes.c_void_p * len(args))(*(ctypes.addressof(a) for a in args))

    def launch(stream: int, _args: list = args) -> None:  # _args: what params points at, alive
        launched = cuda.cuLaunchKernel(kernel, *grid, 1, *block, 1, 0, stream, params, None)
        _check(cuda, launched, "launching a hand-over kernel")

    return launch
