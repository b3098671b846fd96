"""Loader throughput benchmark: ours (DALI, cpu|gpu) or a baseline -> one JSON-ready dict.

CPU use is process CPU time / wall time (ours: this process; baselines: the parent and its worker
processes, read from /proc), so a busy neighbour on a shared machine does not inflate it. On a
GPU machine, NVDEC and SM utilisation are sampled from nvidia-smi every 200 ms while timing.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .config import LoaderConfig

log = logging.getLogger(__name__)

BASELINES = ("ours", "jpeg", "pyav")


@dataclass(frozen=True)
class BenchConfig:
    """What to measure; `loader` describes the data, batch size, threads and decode backend."""

    loader: LoaderConfig
    baseline: str = "ours"  # ours | jpeg | pyav
    seconds: float = 20.0  # timed part
    warmup: float = 5.0  # seconds discarded first
    videos: Path | None = None  # the source UCF-101/ (<Class>/<key>.avi) for jpeg and pyav
    jpeg_dir: Path | None = None  # where the jpeg baseline's frames go (default: a temp dir)
    workers: int | None = None  # baseline worker processes (default: cpu count)

    def __post_init__(self) -> None:
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {', '.join(BASELINES)}")
        if self.baseline != "ours" and self.videos is None:
            raise ValueError(f"the {self.baseline} baseline needs the source videos (--videos)")


class GpuSampler:
    """Background `nvidia-smi -lms 200` reader: mean/max decoder and SM utilisation (percent)."""

    QUERY = ["--query-gpu=utilization.decoder,utilization.gpu", "--format=csv,noheader,nounits"]

    def __init__(self, period_ms: int = 200) -> None:
        self.period_ms = period_ms
        self.samples: list[tuple[float, float]] = []
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuSampler:
        exe = shutil.which("nvidia-smi")
        if exe is None:
            return self
        cmd = [exe, *self.QUERY, f"-lms={self.period_ms}"]
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            parts = line.split(",")[:2]  # first GPU's line (one GPU per loader process)
            try:
                self.samples.append((float(parts[0]), float(parts[1])))
            except (ValueError, IndexError):
                continue

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def summary(self) -> dict[str, float | int | None]:
        if not self.samples:
            return {"nvdec_util_mean": None, "sm_util_mean": None, "gpu_samples": 0}
        dec = [s[0] for s in self.samples]
        sm = [s[1] for s in self.samples]
        return {
            "nvdec_util_mean": round(sum(dec) / len(dec), 1),
            "nvdec_util_max": max(dec),
            "sm_util_mean": round(sum(sm) / len(sm), 1),
            "sm_util_max": max(sm),
            "gpu_samples": len(self.samples),
        }


def cpu_seconds(pids: list[int] | None = None) -> float:
    """User + system CPU seconds of this process (pids=None) or of the given processes."""
    if pids is None:
        t = os.times()
        return t.user + t.system
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def measure(
    batches: Iterator[int], seconds: float, warmup: float, cpu: Callable[[], float]
) -> dict[str, float]:
    """Consume batch sizes: discard `warmup` seconds, then count clips for `seconds`."""
    t_end_warm = time.perf_counter() + warmup
    for _ in batches:
        if time.perf_counter() >= t_end_warm:
            break
    clips, n_batches = 0, 0
    t0, c0 = time.perf_counter(), cpu()
    for n in batches:
        clips += n
        n_batches += 1
        if time.perf_counter() - t0 >= seconds:
            break
    wall, used = time.perf_counter() - t0, cpu() - c0
    return {
        "clips": clips,
        "batches": n_batches,
        "wall_s": round(wall, 2),
        "cpu_cores_used": round(used / wall, 2),
        "clips_per_s": round(clips / wall, 1),
    }


def paddle_takes(decode: str) -> bool:
    """Whether this machine's Paddle can receive the loader's clips (a GPU build for decode=gpu)."""
    try:
        import paddle
    except ImportError:
        return False
    return decode == "cpu" or paddle.device.is_compiled_with_cuda()


def _ours(cfg: BenchConfig, to_paddle: bool) -> Iterator[int]:
    """Clips per batch, handed to Paddle when it can take them, else the synced DALI output."""
    from . import ClipLoader

    with ClipLoader(cfg.loader) as loader:
        epoch = 0
        while True:
            if to_paddle:
                for batch in loader.epoch(epoch):
                    yield int(batch.clips.shape[0])
            else:
                for clips, batch in loader.raw_epoch(epoch):
                    parts = clips if isinstance(clips, list) else [clips]
                    parts[-1].as_tensor()  # wait until the batch exists
                    yield len(batch)
            epoch += 1


def run_bench(cfg: BenchConfig) -> dict:
    """Measure one loader; the dict is what `ucf3d bench loader` prints as one JSON line."""
    lc = cfg.loader
    result: dict = {
        "bench": "loader",
        "baseline": cfg.baseline,
        "decode": lc.decode,
        "split": lc.split,
        "batch_size": lc.batch_size,
        "clip_len": lc.clip_len,
        "size": lc.size,
        "dtype": lc.dtype,
        "cpu_count": os.cpu_count(),
    }
    if cfg.baseline == "ours":
        result["threads"] = lc.num_threads
        result["to_paddle"] = to_paddle = paddle_takes(lc.decode)
        with GpuSampler() as gpu:
            stats = measure(_ours(cfg, to_paddle), cfg.seconds, cfg.warmup, cpu_seconds)
        if lc.decode == "gpu":
            result.update(gpu.summary())
            result.update(pipelines=lc.gpu_pipelines, gpu_batch=lc.gpu_batch)
        cores = lc.num_threads
    else:
        from .baselines import run_baseline

        workers = cfg.workers or os.cpu_count() or 1
        result["workers"] = workers
        stats = run_baseline(cfg, workers, measure)
        cores = workers
    result.update(stats)
    result["frames_per_s"] = round(stats["clips_per_s"] * lc.clip_len, 1)
    busy = max(stats["cpu_cores_used"], 1e-9)
    cores = min(cores, os.cpu_count() or 1)
    result["clips_per_s_per_core"] = round(stats["clips_per_s"] / cores, 1)
    result["clips_per_cpu_s"] = round(stats["clips_per_s"] / busy, 1)
    return result
