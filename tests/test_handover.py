"""The hand-over kernel (loader.handover): its PTX is its source's, and on a GPU it computes what
the framework path computes, in both layouts, on any stream (a green context's included).

The GPU tests use PyTorch (the benchmark's stand-in) to make inputs and check results; they are
marked and skip visibly on CPU machines.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest

from loader import LoaderConfig
from loader.handover import (
    MAX_CLIPS,
    PTX,
    build_ptx,
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
