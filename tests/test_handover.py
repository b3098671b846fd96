"""The hand-over kernel (loader.handover): its PTX is its source's, and on a GPU it computes what
the framework path computes, in both layouts, on any stream (a green context's included).

The GPU tests use PyTorch (the benchmark's stand-in) to make inputs and check results; they are
marked and skip visibly on CPU machines.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest

from loader import LoaderConfig
from loader.augment import flip_folded, param_feed
from loader.backend import Frames
from loader.handover import (
    CROP_CLIPS,
    MAX_CLIPS,
    PTX,
    _CropClip,
    build_ptx,
    clip_sources,
    crop_launches,
    crop_resize_into,
    launches,
    normalize_into,
    rounded,
    source_digest,
    unavailable,
    use_kernel,
)

needs_gpu = pytest.mark.skipif(
    shutil.which("nvidia-smi") is None, reason="needs an NVIDIA GPU with NVDEC"
)
MEAN = (114.77, 107.74, 99.48)


def test_ptx_is_built_from_the_committed_source() -> None:
    """Editing handover.cu without `python -m loader.kernels` leaves a stale kernel: caught."""
    header = PTX.read_text().splitlines()[0]
    assert header == f"// handover.cu sha256 {source_digest()}", (
        "loader/kernels/handover.ptx is not built from handover.cu: run `python -m loader.kernels`"
    )


def test_ptx_is_what_this_nvcc_makes() -> None:
    """Rebuilt with the nvcc that made it, the PTX comes out byte for byte as committed."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("no nvcc on this machine")
    made_by = re.search(r"release (\S+), (V\S+)", PTX.read_text())
    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    if made_by is None or made_by.group(2) not in version:
        pytest.skip(f"this nvcc is not the one that made the PTX ({made_by and made_by.group(2)})")
    assert build_ptx(nvcc) == PTX.read_text()


@pytest.mark.parametrize("arch", ["sm_75", "sm_90"])
def test_ptx_assembles_for_turing_and_hopper(arch: str, tmp_path) -> None:
    """What the driver will do at first use, done by ptxas: the PTX is valid for both GPUs
    (declared ISA 7.0 / sm_70, so a V100 driver JIT-compiles it too; this ptxas has no sm_70)."""
    ptxas = shutil.which("ptxas")
    if ptxas is None:
        pytest.skip("no ptxas on this machine")
    out = tmp_path / "handover.cubin"
    done = subprocess.run([ptxas, f"-arch={arch}", str(PTX), "-o", str(out)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert out.stat().st_size > 0


def test_without_a_driver_the_framework_ops_normalise() -> None:
    """No libcuda (a CPU machine): the kernel says why it cannot run, and nobody uses it."""
    if shutil.which("nvidia-smi") is not None:
        pytest.skip("this machine has an NVIDIA driver")
    assert "libcuda" in (unavailable() or "")
    assert not use_kernel("kernel") and not use_kernel("ops")


def test_handover_setting_is_checked() -> None:
    assert LoaderConfig(manifests="m").handover == "kernel"
    assert LoaderConfig(manifests="m", handover="ops").handover == "ops"
    with pytest.raises(ValueError, match="handover must be one of kernel, ops"):
        LoaderConfig(manifests="m", handover="fused")


def test_launches_take_the_first_n_clips_in_batch_order() -> None:
    """A batch of 40 from 16-clip chunks: 16 + 16 + 8 (the last chunk's padding left), each
    written where it belongs; 4 pixels a thread at 16 x 112 x 112: 196 blocks of 256 a clip."""
    plane = 16 * 112 * 112
    parts = [(1 << 20, 16), (2 << 20, 16), (3 << 20, 16)]
    assert launches(parts, 40, 1 << 30, plane) == [
        ("handover4", 1 << 20, 16, 0, 196),
        ("handover4", 2 << 20, 16, 16, 196),
        ("handover4", 3 << 20, 8, 32, 196),
    ]
    assert launches(parts, 16, 1 << 30, plane) == [("handover4", 1 << 20, 16, 0, 196)]
    with pytest.raises(ValueError, match="48 clips in the parts, 49 asked for"):
        launches(parts, 49, 1 << 30, plane)


def test_launches_fall_back_to_a_pixel_a_thread() -> None:
    """An odd plane, a source not 4-byte aligned, an output not 16-byte aligned: one pixel a
    thread, four times the blocks."""
    assert launches([(4096, 2)], 2, 4096, 3 * 5 * 7) == [("handover", 4096, 2, 0, 1)]
    assert launches([(4097, 2)], 2, 4096, 1024)[0][0] == "handover"
    assert launches([(4096, 2)], 2, 4104, 1024)[0][0] == "handover"
    assert launches([(4096, 2)], 2, 4096, 1024) == [("handover4", 4096, 2, 0, 1)]
    assert launches([(4097, 2)], 2, 4096, 1024)[0][4] == 4


def test_launches_split_past_the_grids_clips() -> None:
    """More clips than a grid's y dimension holds: a second launch, from where the first ended."""
    plane, many = 64, MAX_CLIPS + 10
    assert launches([(0, many)], many, 0, plane) == [
        ("handover4", 0, MAX_CLIPS, 0, 1),
        ("handover4", MAX_CLIPS * plane * 3, 10, MAX_CLIPS, 1),
    ]


def test_mean_rounded_as_the_output_holds_it() -> None:
    assert rounded(MEAN, "float32") == [float(np.float32(v)) for v in MEAN]
    assert rounded(MEAN, "float16") == [114.75, 107.75, 99.5]  # float16 steps 1/16 up to 128


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("planar", [True, False])
@pytest.mark.parametrize("std", [(1.0, 1.0, 1.0), (58.4, 57.1, 57.4)])
@pytest.mark.parametrize("thw", [(3, 5, 7), (2, 4, 6), (2, 4, 6, "offset")])
def test_kernel_matches_the_framework_ops(dtype: str, planar: bool, std: tuple, thw) -> None:
    """Three chunks (the last padded): equal to cast-subtract-multiply in `dtype` (bit for bit
    with std 1: one rounding either way; within one rounding otherwise). An odd T*H*W takes the
    pixel-a-thread kernel, a T*H*W of 4s the 4-pixel one, unless the chunks are not 4-byte
    aligned ("offset")."""
    torch = pytest.importorskip("torch")
    t, h, w = thw[:3]
    skew = 1 if "offset" in thw else 0
    flat = [torch.randint(0, 256, (2 * t * h * w * 3 + skew,), dtype=torch.uint8, device="cuda")
            for _ in range(3)]  # fmt: skip
    chunks = [f[skew:].view(2, t, h, w, 3) for f in flat]
    n, kind = 5, getattr(torch, dtype)
    out = torch.full((n, 3, t, h, w) if planar else (n, t, h, w, 3), float("nan"), dtype=kind,
                     device="cuda")  # fmt: skip
    spans = [(c.data_ptr(), 2) for c in chunks]  # 6 clips held, the first 5 taken
    stream = torch.cuda.current_stream().cuda_stream
    normalize_into(spans, n, out.data_ptr(), t * h * w, MEAN, std, dtype, planar, stream)
    got = out if planar else out.permute(0, 4, 1, 2, 3)
    x = torch.cat(chunks)[:n].permute(0, 4, 1, 2, 3).to(kind)  # (N, C, T, H, W)
    mean = torch.tensor(rounded(MEAN, dtype), device="cuda").view(1, 3, 1, 1, 1).to(kind)
    want = x - mean
    if std != (1.0, 1.0, 1.0):
        inv = torch.tensor(rounded([1 / s for s in std], dtype), device="cuda")
        want = want * inv.view(1, 3, 1, 1, 1).to(kind)
        assert torch.allclose(got.float(), want.float(), rtol=1e-3, atol=1e-3)
    else:
        assert torch.equal(got, want)


@pytest.mark.gpu
@needs_gpu
def test_kernel_runs_on_a_green_context_stream() -> None:
    """Launched on the SM partition's stream (where the steps run), in that stream's context."""
    torch = pytest.importorskip("torch")
    from loader.greenctx import SmPartition
    from loader.greenctx import unavailable as no_green

    if no_green():
        pytest.skip(no_green())
    clips = torch.randint(0, 256, (4, 16, 8, 8, 3), dtype=torch.uint8, device="cuda")
    out = torch.empty(4, 3, 16, 8, 8, dtype=torch.float16, device="cuda")
    with SmPartition(torch.cuda.current_device(), 2, fine=True) as part:
        green = torch.cuda.ExternalStream(part.stream())
        green.wait_stream(torch.cuda.current_stream())
        normalize_into([(clips.data_ptr(), 4)], 4, out.data_ptr(), 16 * 64, MEAN, (1.0,) * 3,
                       "float16", True, green.cuda_stream)  # fmt: skip
        green.synchronize()
    mean = torch.tensor(rounded(MEAN, "float16"), device="cuda").view(1, 3, 1, 1, 1).half()
    assert torch.equal(out, clips.permute(0, 4, 1, 2, 3).half() - mean)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("handover", ["kernel", "ops"])
def test_torch_stand_in_hand_over_never_waits_for_the_gpu(handover: str) -> None:
    """bench feed's PyTorch hand-over queues its work: no host sync after the first batch (a
    per-batch copy of the mean to the device once held every step, docs/BENCHMARKS.md), and
    both hand-overs give the same clips, written into a graphed step's input where given."""
    torch = pytest.importorskip("torch")
    from bench.feed_torch import to_torch

    cfg = SimpleNamespace(mean=MEAN, std=(1.0, 1.0, 1.0), dtype="float32", handover=handover,
                          clip_output=lambda: "uint8")  # fmt: skip
    chunk = torch.randint(0, 256, (4, 16, 8, 8, 3), dtype=torch.uint8, device="cuda")
    first = to_torch([chunk, chunk], 6, cfg)  # the constants reach the device once
    torch.cuda.set_sync_debug_mode("error")  # any synchronising call now raises
    try:
        again = to_torch([chunk, chunk], 6, cfg)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert again.shape == (6, 3, 16, 8, 8)
    assert again.is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.equal(first, again)
    expected = chunk[:, :, :, :, 0].float() - np.float32(MEAN[0])
    assert torch.equal(again[:4, 0], expected) and torch.equal(again[4:, 0], expected[:2])
    into = torch.empty_like(first)  # a graphed step's input: normalised into, nothing copied
    assert to_torch([chunk, chunk], 6, cfg, into) is into and torch.equal(into, first)
    other = torch.empty(2, 3, 16, 8, 8, device="cuda")  # another shape: a new tensor
    assert to_torch([chunk, chunk], 6, cfg, other) is not other


# ---- crop + resize in the hand-over (LoaderConfig.gpu_resize "kernel") --------------------------


def test_gpu_resize_setting_is_checked() -> None:
    """auto (the default) is the kernel wherever it can crop: NVDEC's uint8 frames with the
    kernel hand-over and no antialiasing; asked for elsewhere, "kernel" is refused."""
    base = {"manifests": "m", "decode": "gpu"}
    assert LoaderConfig(**base).gpu_resize == "auto"
    assert LoaderConfig(**base).resizer() == "kernel"
    assert LoaderConfig(gpu_resize="dali", **base).resizer() == "dali"
    assert LoaderConfig(gpu_resize="kernel", **base).resizer() == "kernel"
    with pytest.raises(ValueError, match="gpu_resize must be one of auto, dali, kernel"):
        LoaderConfig(gpu_resize="nvdec", **base)
    for other in ({"decode": "cpu"}, {"decode": "hybrid"}, {"handover": "ops"},
                  {"antialias": True}, {"output": "float"}):  # fmt: skip
        assert LoaderConfig(**{**base, **other}).resizer() == "dali"
        with pytest.raises(ValueError, match="gpu_resize 'kernel' crops NVDEC's frames"):
            LoaderConfig(**{**base, "gpu_resize": "kernel", **other})


def _requests(rois: list, flips: list) -> np.ndarray:
    req = np.zeros(len(rois), dtype=[("roi", np.float32, 4), ("flip", np.int8)])
    req["roi"], req["flip"] = rois, flips
    return req


def test_flip_folded_is_what_dali_is_given() -> None:
    req = _requests([[0, 1, 100, 121], [10, 20, 74, 84]], [0, 1])
    roi = flip_folded(req)
    assert roi.tolist() == [[0, 1, 100, 121], [10, 84, 74, 20]]  # the flip swaps x's ends
    starts, ends = param_feed(req)
    assert np.array_equal(np.stack(starts), roi[:, :2])
    assert np.array_equal(np.stack(ends), roi[:, 2:])


def test_clip_sources_take_dense_chunks_and_single_clips_in_order() -> None:
    t, h, w = 4, 6, 10
    clip = t * h * w * 3
    parts = [(1000, (2, t, h, w, 3)), (9000, (t, 8, 12, 3)), (20000, (3, t, h, w, 3))]
    assert clip_sources(parts, 5) == [(1000, t, h, w), (1000 + clip, t, h, w), (9000, t, 8, 12),
                                      (20000, t, h, w), (20000 + clip, t, h, w)]  # fmt: skip
    with pytest.raises(ValueError, match="6 clips in the parts, 7 asked for"):
        clip_sources(parts, 7)
    with pytest.raises(ValueError, match="expected"):
        clip_sources([(0, (2, t, h, w))], 1)  # not (.., 3)


def test_crop_launches_pack_each_clips_window() -> None:
    assert ctypes.sizeof(_CropClip) == 32  # handover.cu's CropClip
    n, size = CROP_CLIPS + 8, 112
    sources = [(4096 * (i + 1), 16, 128, 170) for i in range(n)]
    rois = flip_folded(_requests([[0, 21, 128, 149]] * n, [i % 2 for i in range(n)]))
    planned = crop_launches(sources, rois, size)
    assert [(first, count) for first, count, _ in planned] == [(0, CROP_CLIPS), (CROP_CLIPS, 8)]
    first, count, packed = planned[1]
    c = packed.c[1]  # clip 33: flipped
    assert (c.src, c.h, c.w) == (4096 * 34, 128, 170)
    assert (c.y0, c.x0) == (0.0, 149.0) and c.sy == pytest.approx(128 / size)
    assert c.sx == pytest.approx(-128 / size)  # right to left
    assert packed.c[0].sx == pytest.approx(128 / size) and packed.c[0].x0 == 21.0
    with pytest.raises(ValueError, match="3 crop windows for 2 clips"):
        crop_launches(sources[:2], rois[:3], size)


def _bilinear(frames, roi, size):  # noqa: ANN001, ANN202 - torch reference: (T, H, W, 3) -> (3, T, S, S)
    import torch

    t, h, w, _ = frames.shape
    y0, x0, y1, x1 = (float(v) for v in roi)
    o = torch.arange(size, dtype=torch.float64, device=frames.device) + 0.5
    fy, fx = y0 + o * (y1 - y0) / size - 0.5, x0 + o * (x1 - x0) / size - 0.5
    iy, ix = fy.floor(), fx.floor()
    wy, wx = (fy - iy).view(1, -1, 1, 1), (fx - ix).view(1, 1, -1, 1)
    ya, yb = iy.long().clamp(0, h - 1), (iy.long() + 1).clamp(0, h - 1)
    xa, xb = ix.long().clamp(0, w - 1), (ix.long() + 1).clamp(0, w - 1)
    f = frames.double()
    top = f[:, ya][:, :, xa] * (1 - wx) + f[:, ya][:, :, xb] * wx
    bot = f[:, yb][:, :, xa] * (1 - wx) + f[:, yb][:, :, xb] * wx
    return (top * (1 - wy) + bot * wy).round().permute(3, 0, 1, 2)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("planar", [True, False])
def test_crop_resize_is_bilinear_from_the_window(planar: bool) -> None:
    """Clips of two frame sizes (a dense chunk, then clips one by one), windows inside the
    frame, at its edges, flipped, and more than CROP_CLIPS clips (two launches): equal to a
    float64 bilinear reference rounded as DALI's uint8 output, up to a tie rounded the other
    way; then normalised as normalize_into does."""
    torch = pytest.importorskip("torch")
    gen = torch.Generator(device="cuda").manual_seed(0)
    t, size, n_dense = 3, 16, CROP_CLIPS + 2
    dense = torch.randint(0, 256, (n_dense, t, 24, 30, 3), dtype=torch.uint8, device="cuda",
                          generator=gen)  # fmt: skip
    single = [torch.randint(0, 256, (t, 20, 26, 3), dtype=torch.uint8, device="cuda",
                            generator=gen) for _ in range(3)]  # fmt: skip
    frames = [*dense, *single]
    rng = np.random.default_rng(0)
    rois, flips = [], []
    for f in frames:
        h, w = f.shape[1:3]
        side = rng.uniform(0.4, 1.0) * min(h, w)
        y0, x0 = rng.uniform(0, h - side), rng.uniform(0, w - side)
        rois.append([y0, x0, y0 + side, x0 + side])
        flips.append(int(rng.integers(2)))
    rois[0], rois[-1] = [0, 0, 24, 24], [0, 6, 20, 26]  # flush with the frame's edges
    folded = flip_folded(_requests(rois, flips))
    parts = [(dense.data_ptr(), tuple(dense.shape))] + [(s.data_ptr(), tuple(s.shape))
                                                         for s in single]  # fmt: skip
    n = len(frames)
    sources = clip_sources(parts, n)
    shape = (n, 3, t, size, size) if planar else (n, t, size, size, 3)
    out = torch.full(shape, float("nan"), device="cuda")
    stream = torch.cuda.current_stream().cuda_stream
    crop_resize_into(sources, folded, size, out.data_ptr(), (0, 0, 0), (1, 1, 1), "float32",
                     planar, stream)  # fmt: skip
    got = out if planar else out.permute(0, 4, 1, 2, 3)
    want = torch.stack([_bilinear(f, r, size) for f, r in zip(frames, folded, strict=True)])
    diff = (got.double() - want).abs()
    assert diff.max() <= 1 and (diff > 0).double().mean() < 1e-3, diff.max()
    half = torch.empty((n, 3, t, size, size), dtype=torch.float16, device="cuda")
    crop_resize_into(sources, folded, size, half.data_ptr(), MEAN, (1, 1, 1), "float16", True,
                     stream)  # fmt: skip
    mean = torch.tensor(rounded(MEAN, "float16"), device="cuda").view(1, 3, 1, 1, 1)
    assert torch.equal(half, (got.float() - mean).half())  # integers minus the rounded mean


@pytest.mark.gpu
@needs_gpu
def test_crop_resize_matches_dalis_resize_and_the_stand_in_takes_frames() -> None:
    """The kernel against DALI's fn.resize with the same windows (what gpu_resize "dali" runs),
    from the same frames; and bench feed's stand-in hand-over given `Frames` (whole frames and
    their windows, as the NVDEC backend yields them with gpu_resize "kernel") gives the same."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("nvidia.dali")
    from nvidia.dali import fn, pipeline_def, types

    from bench.feed_torch import to_torch

    rng = np.random.default_rng(1)
    t, size, n = 4, 112, 8
    frames = [rng.integers(0, 256, (t, 128, 170, 3), dtype=np.uint8) for _ in range(n)]
    rois, flips = [], []
    for i in range(n):
        side = [128, 107.6, 90.5, 76.1, 64][i % 5]
        corners = [(0, 0), (0, 170 - side), (128 - side, 0), ((128 - side) / 2, (170 - side) / 2)]
        y0, x0 = corners[i % 4]
        rois.append([y0, x0, y0 + side, x0 + side])
        flips.append(i % 2)
    req = _requests(rois, flips)

    @pipeline_def(batch_size=n, num_threads=1, device_id=0)
    def resized():  # noqa: ANN202 - DALI graph
        x = fn.external_source(source=lambda: frames, batch=True, layout="FHWC").gpu()
        starts, ends = param_feed(req)
        start = fn.external_source(lambda: starts, batch=True)
        end = fn.external_source(lambda: ends, batch=True)
        crop = fn.resize(x, roi_start=start, roi_end=end, size=[size, size],
                         interp_type=types.INTERP_LINEAR, antialias=False)  # fmt: skip
        return crop, x

    pipe = resized()
    pipe.build()
    by_dali, whole = pipe.run()
    want = torch.from_dlpack(by_dali.as_tensor()).permute(0, 4, 1, 2, 3).float()
    cfg = SimpleNamespace(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), dtype="float32",
                          size=size, handover="kernel", clip_output=lambda: "uint8")  # fmt: skip
    got = to_torch(Frames([whole], flip_folded(req)), n, cfg)
    assert got.shape == (n, 3, t, size, size)
    assert got.is_contiguous(memory_format=torch.channels_last_3d)
    diff = (got - want).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3, diff.max()


def test_without_a_driver_dali_crops_nvdecs_frames(prepared, tmp_path, caplog) -> None:  # noqa: ANN001
    """gpu_resize "kernel" where the kernel cannot run: the NVDEC pipelines keep DALI's resize
    (their outputs are then cropped clips, not Frames) and the log says why (the backend is
    built for real; its pipelines start only in run())."""
    if unavailable() is None:
        pytest.skip("the kernel runs here: the fallback is not taken")
    from loader import ClipLoader
    from loader.gpu import GpuBackend

    cfg = LoaderConfig(manifests=prepared.manifests, shards=prepared.shards, batch_size=8,
                       decode="gpu", gpu_resize="kernel", cache_dir=tmp_path)  # fmt: skip
    with ClipLoader(cfg) as loader, caplog.at_level("WARNING", logger="loader.gpu"):
        backend = GpuBackend(cfg, loader.dataset, planner=loader.batches)
        try:
            assert backend.resize == "dali"
        finally:
            backend.close()
    assert "NVDEC: DALI crops and resizes the frames: no CUDA driver" in caplog.text


def test_paddle_bridge_crops_frames_only_on_the_trainings_gpu() -> None:
    """Whole frames reach Paddle's bridge only from NVDEC; frames elsewhere (here in host
    memory) are refused with the reason, not cropped on the wrong device."""
    pytest.importorskip("paddle")  # the bridge imports it (the GPU machine has none)
    from nvidia.dali.tensors import TensorListCPU

    from loader.bridge import to_paddle
    from loader.source import LoaderError

    frames = TensorListCPU(np.zeros((2, 4, 6, 8, 3), np.uint8))
    cfg = LoaderConfig(manifests="m", decode="gpu", batch_size=2, size=4)
    assert cfg.resizer() == "kernel"
    windows = flip_folded(_requests([[0, 0, 6, 6], [0, 2, 6, 8]], [0, 1]))
    with pytest.raises(LoaderError, match="gpu_resize 'kernel': the frames are on"):
        to_paddle(Frames([frames], windows), 2, cfg)


def test_launches_reach_the_driver_as_planned(monkeypatch) -> None:  # noqa: ANN001
    """What the driver is asked for (its launch call recorded, on any machine): each kernel's
    grid, block, stream and arguments, for both hand-overs."""
    import loader.handover as handover

    calls = []

    class Driver:
        def cuLaunchKernel(self, kernel, *rest):  # noqa: ANN001, ANN002, ANN202, N802
            *dims, shared, stream, params, extra = rest
            first_arg = ctypes.cast(params[0], ctypes.POINTER(ctypes.c_uint64))[0]
            calls.append((kernel, tuple(dims), shared, stream, first_arg, extra))
            return 0

    names = [f"{f}_{d}" for d in ("float16", "float32")
             for f in ("handover", "handover4", "crop_resize")]  # fmt: skip
    monkeypatch.setattr(handover, "libcuda", Driver)
    monkeypatch.setattr(handover, "_kernels", lambda: {k: k for k in names})
    handover.normalize_into([(4096, 16), (8192, 16)], 20, 1 << 20, 16 * 112 * 112, MEAN,
                            (1.0,) * 3, "float16", True, 77)  # fmt: skip
    assert calls == [("handover4_float16", (196, 16, 1, 256, 1, 1), 0, 77, 4096, None),
                     ("handover4_float16", (196, 4, 1, 256, 1, 1), 0, 77, 8192, None)]  # fmt: skip
    calls.clear()
    sources = [(4096 * (i + 1), 16, 128, 170) for i in range(40)]
    rois = np.tile(np.float32([0, 0, 128, 128]), (40, 1))
    crop_resize_into(sources, rois, 112, 1 << 20, MEAN, (1.0,) * 3, "float32", False, 5)
    rows = 16 * 112 // (2 * 4)  # T x size output rows, 2 a block, 4 a thread
    assert [(c[0], c[1], c[3]) for c in calls] == [
        ("crop_resize_float32", (rows, 32, 1, 128, 2, 1), 5),
        ("crop_resize_float32", (rows, 8, 1, 128, 2, 1), 5),
    ]
    assert calls[0][4] == 4096 and calls[1][4] == 4096 * 33  # the first clip's frames, by value


def test_both_hand_overs_refuse_a_dtype_the_kernels_do_not_write() -> None:
    """Before anything reaches the driver (so on any machine)."""
    with pytest.raises(ValueError, match="writes .*not bfloat16"):
        normalize_into([(4096, 2)], 2, 8192, 64, MEAN, (1.0,) * 3, "bfloat16", True, 0)
    with pytest.raises(ValueError, match="writes .*not bfloat16"):
        crop_resize_into([(4096, 4, 8, 8)], np.zeros((1, 4), np.float32), 4, 8192, MEAN,
                         (1.0,) * 3, "bfloat16", True, 0)  # fmt: skip
