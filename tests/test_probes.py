"""The GPU probes of bench/ (diagnostics for docs/BENCHMARKS.md) run and account for what they
measure. GPU-only; this module imports neither Paddle nor test data, so it runs on the
benchmark machine (PyTorch and the driver only)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

needs_gpu = pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="needs an NVIDIA GPU")


@pytest.mark.gpu
@needs_gpu
def test_spill_probe_runs_on_the_gpu() -> None:
    """bench.spill_probe: one line per phase; the confined load on the SMs the partition leaves,
    the step on the partition or (whole-) on every SM, every load kernel accounted for."""
    from loader.greenctx import unavailable

    pytest.importorskip("torch")
    if unavailable():
        pytest.skip(f"no green contexts here: {unavailable()}")
    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "bench.spill_probe", "--steps", "3", "--warmup", "2",
           "--rate", "2000", "--loads", "none,every,rest,whole-every"]  # fmt: skip
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300, check=True)
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["load"] for r in lines] == ["none", "every", "rest", "every"]
    sms = lines[0]["device_sms"]
    assert [r["step_sms"] for r in lines] == [sms - 2] * 3 + [0]
    assert lines[2]["load_sms"] == 2 and "load_kernels_per_s" not in lines[0]
    for r in lines:
        assert 0 < r["step_ms_median"] <= r["step_ms_max"] and r["clips_per_s"] > 0
    for r in lines[1:]:
        assert 0 < r["load_kernels_per_s"] <= 2000 * 1.05
        timed = r["load_kernel_us"]  # one kernel in 50 timed while the steps ran
        assert timed["n"] > 0 and 0 < timed["median"] <= timed["p99"] <= timed["max"]


@pytest.mark.gpu
@needs_gpu
def test_nvc_probe_runs_on_the_gpu() -> None:
    """bench.nvc_probe: decoding alone and beside the step, one line a phase, clips decoded and
    none failed. Needs PyNvVideoCodec and a folder `nvc_probe remux` wrote (the GPU machine has no
    ffmpeg to write it): UCF3D_NVC_VIDEOS."""
    import os

    pytest.importorskip("torch")
    pytest.importorskip("PyNvVideoCodec")
    videos = os.environ.get("UCF3D_NVC_VIDEOS")
    if not videos:
        pytest.skip("UCF3D_NVC_VIDEOS (a folder `python -m bench.nvc_probe remux` wrote) not set")
    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "bench.nvc_probe", "run", "--videos", videos, "--threads", "2",
           "--rate", "50", "--seconds", "1", "--steps", "3", "--warmup", "2",
           "--phases", "decode-1,none,native"]  # fmt: skip
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300, check=True)
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["phase"] for r in lines] == ["decode-1", "none", "native"]
    assert lines[0]["count_mismatches"] == [] and "errors" not in lines[0]
    assert lines[0]["decoded_clips"] > 0 and lines[2]["decoded_clips"] > 0
    assert "errors" not in lines[2] and lines[2]["decoded_per_s"] <= 50 * 1.1
    assert 0 < lines[1]["step_ms_median"] and 0 < lines[2]["step_ms_median"]


@pytest.mark.gpu
@needs_gpu
def test_own_reader_runs_on_the_gpu() -> None:
    """bench.own_reader: NVDEC through our own reader (its streams at high priority) maps every
    window alone and beside the step, one line a phase, none failed. Needs footage:
    UCF3D_FOOTAGE, a folder holding `manifests/` and `shards/` (e.g. bench footage + extract +
    shard; the GPU machine has no ffmpeg), and a C compiler or UCF3D_OWN_READER (a library
    `python -m bench.own_reader build` made)."""
    import os

    pytest.importorskip("torch")
    footage = os.environ.get("UCF3D_FOOTAGE")
    if not footage:
        pytest.skip("UCF3D_FOOTAGE (a folder with manifests/ and shards/) not set")
    if not os.environ.get("UCF3D_OWN_READER"):  # then it is built here, from DALI's headers
        pytest.importorskip("nvidia.dali")
        if shutil.which("cc") is None:
            pytest.skip("no C compiler and no UCF3D_OWN_READER")
    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "bench.own_reader", "run", "--manifests", f"{footage}/manifests",
           "--shards", f"{footage}/shards", "--threads", "2", "--rate", "50", "--seconds", "1",
           "--steps", "3", "--warmup", "2", "--priority", "-5",
           "--phases", "decode-1,none,maps,convert,last"]  # fmt: skip
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300, check=True)
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["phase"] for r in lines] == ["decode-1", "none", "maps", "convert", "last"]
    assert {r["priority"] for r in lines} == {-5}
    assert not [r["errors"] for r in lines if "errors" in r]
    assert lines[0]["decoded_clips"] > 0
    for r in lines[2:]:
        assert 0 < r["decoded_per_s"] <= 50 * 1.1 and 0 < r["step_ms_median"]
