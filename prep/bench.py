"""bench prep: extract+shard vs. the original JPEG-frame route, same videos, same process count."""

from __future__ import annotations

import logging
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from prep.extract import ExtractConfig, extract
from prep.ffmpeg import run_ffmpeg
from prep.shard import ShardConfig, shard
from prep.synth import SynthConfig, synth
from prep.ucf import read_splits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchPrepConfig:
    scratch: Path  # everything is written under here (and left there for inspection)
    videos: Path | None = None  # an existing UCF-101/ tree; None: synthesize one first (untimed)
    splits: Path | None = None
    classes: int = 10
    groups: int = 5
    clips: int = 1
    seconds: float = 7.0  # UCF-101's mean length
    jobs: int = 0  # 0: all cores, for both routes
    codec: str = "vp9"
    seed: int = 0
    ffmpeg: str | None = None


def _jpeg_one(args: tuple[Path, Path, str | None]) -> int:
    """The original code's route: `ffmpeg -i video.avi -vf scale=-1:240 image_%05d.jpg`."""
    src, dst, ffmpeg = args
    dst.mkdir(parents=True, exist_ok=True)
    run_ffmpeg(
        ["-i", os.fspath(src), "-vf", "scale=-1:240", os.fspath(dst / "image_%05d.jpg")],
        src,
        ffmpeg=ffmpeg,
    )
    return len(os.listdir(dst))


def disk_usage(root: Path) -> tuple[int, int, int]:
    """(files, apparent bytes, allocated bytes) under root."""
    files = size = alloc = 0
    for dirpath, _, names in os.walk(root):
        for n in names:
            st = os.stat(os.path.join(dirpath, n))
            files, size, alloc = files + 1, size + st.st_size, alloc + st.st_blocks * 512
    return files, size, alloc


def bench_prep(cfg: BenchPrepConfig) -> dict:
    """Time both routes on the same videos; return the figures (the CLI prints them as JSON)."""
    scratch = Path(cfg.scratch)
    jobs = cfg.jobs or os.cpu_count() or 1
    videos, splits = cfg.videos, cfg.splits
    if videos is None:
        data = scratch / "data"
        if not (data / "ucfTrainTestlist" / "classInd.txt").is_file():
            synth(
                SynthConfig(
                    data,
                    cfg.classes,
                    cfg.groups,
                    cfg.clips,
                    cfg.seconds,
                    cfg.seed,
                    jobs,
                    cfg.ffmpeg,
                )
            )
        videos, splits = data / "UCF-101", data / "ucfTrainTestlist"
    if splits is None:
        raise ValueError("--splits is required with --videos")
    _, entries = read_splits(splits)
    for sub in ("jpg", "work", "shards", "manifests"):
        shutil.rmtree(scratch / sub, ignore_errors=True)

    t0 = time.perf_counter()
    tasks = [
        (Path(videos) / e.relpath, scratch / "jpg" / e.cls / e.key, cfg.ffmpeg) for e in entries
    ]
    with ProcessPoolExecutor(jobs) as pool:
        jpeg_frames = sum(pool.map(_jpeg_one, tasks))
    t_jpeg = time.perf_counter() - t0

    t0 = time.perf_counter()
    res = extract(
        ExtractConfig(
            Path(videos),
            Path(splits),
            scratch / "work",
            codec=cfg.codec,
            jobs=jobs,
            ffmpeg=cfg.ffmpeg,
        )
    )
    t_extract = time.perf_counter() - t0
    t0 = time.perf_counter()
    shard(ShardConfig(scratch / "work", 1, scratch / "shards", scratch / "manifests"))
    t_shard = time.perf_counter() - t0

    _, src_bytes, _ = disk_usage(Path(videos))
    jpeg_files, jpeg_bytes, jpeg_alloc = disk_usage(scratch / "jpg")
    _, shard_bytes, shard_alloc = disk_usage(scratch / "shards")
    _, work_bytes, _ = disk_usage(scratch / "work")
    ours = t_extract + t_shard
    return {
        "bench": "prep",
        "n_videos": len(entries),
        "prepared": res.prepared,
        "cores": os.cpu_count(),
        "jobs": jobs,
        "codec": cfg.codec,
        "src_bytes": src_bytes,
        "jpeg": {
            "seconds": round(t_jpeg, 2),
            "frames": jpeg_frames,
            "bytes": jpeg_bytes,
            "allocated_bytes": jpeg_alloc,
            "files": jpeg_files,
        },
        "ours": {
            "seconds": round(ours, 2),
            "extract_seconds": round(t_extract, 2),
            "shard_seconds": round(t_shard, 2),
            "shard_bytes": shard_bytes,
            "shard_allocated_bytes": shard_alloc,
            "work_bytes": work_bytes,
        },
        "speedup": round(t_jpeg / ours, 2),
        "disk_ratio": round(jpeg_bytes / shard_bytes, 1),
        "disk_ratio_allocated": round(jpeg_alloc / shard_alloc, 1),
    }
