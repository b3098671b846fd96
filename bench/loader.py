"""bench loader: loader throughput alone: ours (DALI, cpu|gpu) or a baseline -> one JSON-ready dict.

CPU use is process CPU time / wall time (ours: this process; baselines: the parent and its worker
processes, read from /proc), so a busy neighbour on a shared machine does not inflate it. On a
GPU machine, NVDEC and SM utilisation are sampled from nvidia-smi every 200 ms while timing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.measure import GpuSampler, cpu_seconds, measure
from loader import ClipLoader, LoaderConfig
from loader.backend import Frames
from loader.handover import frame_parts

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


def paddle_takes(decode: str) -> bool:
    """Whether this machine's Paddle can receive the loader's clips (a GPU build for decode=gpu)."""
    try:
        import paddle
    except ImportError:
        return False
    return decode == "cpu" or paddle.device.is_compiled_with_cuda()


def _ours(cfg: BenchConfig, to_paddle: bool) -> Iterator[int]:
    """Clips per batch, handed to Paddle when it can take them, else the synced DALI output."""
    with ClipLoader(cfg.loader) as loader:
        epoch = 0
        while True:
            if to_paddle:
                for batch in loader.epoch(epoch):
                    yield int(batch.clips.shape[0])
            else:
                for clips, batch in loader.raw_epoch(epoch):
                    if isinstance(clips, Frames):  # whole frames: the consumer crops them
                        clips = clips.chunks
                    parts = clips if isinstance(clips, list) else [clips]
                    frame_parts(parts[-1])  # wait until the batch exists
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
            # "kernel": DALI hands whole frames over and the consumer's hand-over crops them,
            # which is not timed here without Paddle (bench feed times it)
            result["resize"] = lc.resizer()
        cores = lc.num_threads
    else:
        from bench.baselines import run_baseline

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
