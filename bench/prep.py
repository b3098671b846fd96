"""bench prep: extract+shard vs. the original JPEG-frame route, same videos, same process count."""

from __future__ import annotations

import logging
import os
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from prep.encode import Encoding
from prep.extract import ExtractConfig, extract
from prep.ffmpeg import DecodeError, run_ffmpeg
from prep.shard import ShardConfig, shard
from prep.synth import SynthConfig, synth
from prep.ucf import read_splits
from prep.workers import WorkerPool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchPrepConfig:
    scratch: Path  # everything is written under here (and left there for inspection)
    videos: Path | None = None  # an existing UCF-101/ tree; None: synthesize one first (untimed)
    splits: Path | None = None
    classes: int = 10
    groups: int = 8  # > 7, so split 1 has train and test videos
    clips: int = 1
    seconds: float = 7.0  # UCF-101's mean length
    jobs: int = 0  # 0: all cores, for both routes
    codec: str = "vp9"
    seed: int = 0
    repeats: int = 1
    crf: int | None = None  # None: extract's default for the codec
    ffmpeg: str | None = None


def _jpeg_one(args: tuple[Path, Path, str | None]) -> tuple[int, str | None]:
    """The original code's route: `ffmpeg -i video.avi -vf scale=-1:240 image_%05d.jpg`.

    (frames, None), or (0, reason) for a video ffmpeg cannot convert: skipped and counted, as
    extract does, so one broken video does not stop the benchmark."""
    src, dst, ffmpeg = args
    dst.mkdir(parents=True, exist_ok=True)
    try:
        run_ffmpeg(
            ["-i", os.fspath(src), "-vf", "scale=-1:240", os.fspath(dst / "image_%05d.jpg")],
            src,
            ffmpeg=ffmpeg,
        )
    except DecodeError as e:
        shutil.rmtree(dst, ignore_errors=True)
        return 0, str(e)
    return len(os.listdir(dst)), None


def disk_usage(root: Path) -> tuple[int, int, int]:
    """(files, apparent bytes, allocated bytes) under root."""
    files = size = alloc = 0
    for dirpath, _, names in os.walk(root):
        for n in names:
            st = os.stat(os.path.join(dirpath, n))
            files, size, alloc = files + 1, size + st.st_size, alloc + st.st_blocks * 512
    return files, size, alloc


def _cpu_seconds() -> float:
    """CPU time of this process and its reaped children (pool workers and their ffmpegs)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _time_jpeg(cfg: BenchPrepConfig, entries, videos: Path, scratch: Path, jobs: int):
    shutil.rmtree(scratch / "jpg", ignore_errors=True)
    c0, t0 = _cpu_seconds(), time.perf_counter()
    tasks = [(videos / e.relpath, scratch / "jpg" / e.cls / e.key, cfg.ffmpeg) for e in entries]
    frames, errors = 0, 0
    with WorkerPool(jobs) as pool:
        for n, error in pool.imap_unordered(_jpeg_one, tasks):
            frames, errors = frames + n, errors + (error is not None)
            if error:
                log.warning("jpeg route: %s", error)
    return time.perf_counter() - t0, _cpu_seconds() - c0, frames, errors


def _time_ours(cfg: BenchPrepConfig, videos: Path, splits: Path, scratch: Path, jobs: int):
    for sub in ("work", "shards", "manifests"):
        shutil.rmtree(scratch / sub, ignore_errors=True)
    c0, t0 = _cpu_seconds(), time.perf_counter()
    ecfg = ExtractConfig(
        videos, splits, scratch / "work", codec=cfg.codec, crf=cfg.crf, jobs=jobs, ffmpeg=cfg.ffmpeg
    )
    res = extract(ecfg)
    t1 = time.perf_counter()
    shard(ShardConfig(scratch / "work", 1, scratch / "shards", scratch / "manifests"))
    t2 = time.perf_counter()
    return t2 - t0, _cpu_seconds() - c0, t1 - t0, t2 - t1, res


def bench_prep(cfg: BenchPrepConfig) -> dict:
    """Time both routes on the same videos; return the figures (the CLI prints them as JSON)."""
    scratch = Path(cfg.scratch)
    jobs = cfg.jobs or os.cpu_count() or 1
    videos, splits = cfg.videos, cfg.splits
    if videos is None:
        data = (
            scratch / f"synth-{cfg.classes}x{cfg.groups}x{cfg.clips}-{cfg.seconds}s-seed{cfg.seed}"
        )
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
    load = os.getloadavg()[0]
    jpeg_runs, our_runs = [], []
    for _ in range(cfg.repeats):  # alternate the routes; keep each route's best run
        jpeg_runs.append(_time_jpeg(cfg, entries, Path(videos), scratch, jobs))
        our_runs.append(_time_ours(cfg, Path(videos), Path(splits), scratch, jobs))
    t_jpeg, c_jpeg, jpeg_frames, jpeg_errors = min(jpeg_runs)
    ours, c_ours, t_extract, t_shard, res = min(our_runs, key=lambda r: r[0])

    _, src_bytes, _ = disk_usage(Path(videos))
    jpeg_files, jpeg_bytes, jpeg_alloc = disk_usage(scratch / "jpg")
    _, shard_bytes, shard_alloc = disk_usage(scratch / "shards")
    _, work_bytes, _ = disk_usage(scratch / "work")
    return {
        "bench": "prep",
        "n_videos": len(entries),
        "prepared": res.prepared,
        "cores": os.cpu_count(),
        "jobs": jobs,
        "codec": cfg.codec,
        "crf": Encoding(cfg.codec, crf=cfg.crf).crf,
        "repeats": cfg.repeats,
        "load_avg_1min_at_start": round(load, 2),
        "src_bytes": src_bytes,
        "jpeg": {
            "seconds": round(t_jpeg, 2),
            "cpu_seconds": round(c_jpeg, 2),
            "frames": jpeg_frames,
            "errors": jpeg_errors,  # videos ffmpeg could not convert, skipped
            "bytes": jpeg_bytes,
            "allocated_bytes": jpeg_alloc,
            "files": jpeg_files,
        },
        "ours": {
            "seconds": round(ours, 2),
            "cpu_seconds": round(c_ours, 2),
            "extract_seconds": round(t_extract, 2),
            "shard_seconds": round(t_shard, 2),
            "errors": res.errors,  # videos extract could not prepare (its errors.jsonl)
            "shard_bytes": shard_bytes,
            "shard_allocated_bytes": shard_alloc,
            "work_bytes": work_bytes,
        },
        "speedup": round(t_jpeg / ours, 2),
        "cpu_ratio": round(c_jpeg / c_ours, 2),
        "disk_ratio": round(jpeg_bytes / shard_bytes, 1),
        "disk_ratio_allocated": round(jpeg_alloc / shard_alloc, 1),
    }
