"""Baseline loaders for the CPU benchmark: same clips and augmentation as ours, a process per core.

- jpeg: Hara et al.'s own route — frames dumped once (untimed) with
  `ffmpeg -i video.avi -vf scale=-1:240 image_%05d.jpg`, then per clip PIL opens 16 JPEGs and
  applies the same multi-scale corner crop + bilinear resize + flip + mean subtraction (CFHW fp32).
- pyav: PyAV seeks in the original AVI (xvid), decodes the 16 frames (one codec thread per worker)
  and applies the same transform.
Both use the training plan of loader.sampling (same starts, scales, corners, flips) and a
multiprocessing Pool of `workers` processes feeding batches of `batch_size` to the parent.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing as mp
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from bench.measure import cpu_seconds
from loader.sampling import hara_corner_roi, train_plan
from loader.source import load_dataset

log = logging.getLogger(__name__)

MAX_VIDEOS = 120  # videos the baselines prepare/cycle over (enough to defeat any per-video cache)


def _transform(
    frames: list[np.ndarray], scale: float, corner: int, flip: int, size: int, mean: np.ndarray
) -> np.ndarray:
    """Hara's MultiScaleCornerCrop + RandomHorizontalFlip + Normalize on HWC uint8 frames."""
    from PIL import Image

    h, w = frames[0].shape[:2]
    y0, x0, y1, x1 = (
        int(v) for v in hara_corner_roi(np.array(h), np.array(w), np.array(scale), np.array(corner))
    )
    out = np.empty((len(frames), size, size, 3), np.float32)
    for t, f in enumerate(frames):
        img = Image.fromarray(f).crop((x0, y0, x1, y1)).resize((size, size), Image.BILINEAR)
        if flip:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        out[t] = np.asarray(img, np.float32)
    out -= mean
    return np.ascontiguousarray(out.transpose(3, 0, 1, 2))


def _jpeg_clip(job: tuple) -> np.ndarray:
    from PIL import Image

    folder, frames, scale, corner, flip, size, mean = job
    imgs = []
    for i in frames:
        with Image.open(Path(folder) / f"image_{i + 1:05d}.jpg") as im:
            imgs.append(np.asarray(im.convert("RGB")))
    return _transform(imgs, scale, corner, flip, size, mean)


def _pyav_clip(job: tuple) -> np.ndarray:
    import av

    path, frames, scale, corner, flip, size, mean = job
    first, last = min(frames), max(frames)
    got: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        rate, tb = float(stream.average_rate), stream.time_base
        container.seek(int(first / rate / tb), stream=stream, backward=True, any_frame=False)
        for n, frame in enumerate(container.decode(stream)):
            idx = round(float(frame.pts * tb) * rate) if frame.pts is not None else n
            if idx > last:
                break
            if idx >= first:
                got[idx] = frame.to_ndarray(format="rgb24")
    if not got:
        raise RuntimeError(f"{path}: no frames decoded in {first}..{last}")
    keys = sorted(got)
    imgs = [got.get(i, got[keys[min(np.searchsorted(keys, i), len(keys) - 1)]]) for i in frames]
    return _transform(imgs, scale, corner, flip, size, mean)


def dump_jpegs(avi: Path, out: Path, ffmpeg: str) -> int:
    """Hara's preprocessing for one video; the number of frames written."""
    out.mkdir(parents=True, exist_ok=True)
    if not any(out.glob("image_*.jpg")):
        cmd = [
            ffmpeg,
            "-nostdin",
            "-loglevel",
            "error",
            "-i",
            str(avi),
            "-vf",
            "scale=-1:240",
            str(out / "image_%05d.jpg"),
        ]
        subprocess.run(cmd, check=True, capture_output=True)
    return len(list(out.glob("image_*.jpg")))


def _jobs(cfg, kind: str, workdir: Path) -> list[tuple]:
    """Per-video source + n_frames, then the training plan's clips as worker jobs (one epoch)."""
    import imageio_ffmpeg

    lc = cfg.loader
    ds = load_dataset(lc)
    recs = ds.records[:MAX_VIDEOS]
    sources, n_frames = [], []
    for rec in recs:
        avi = cfg.videos / rec.cls / f"{rec.key}.avi"
        if not avi.is_file():
            raise FileNotFoundError(f"{avi}: source video of {rec.key} not found (--videos)")
        if kind == "jpeg":
            folder = workdir / rec.cls / rec.key
            n_frames.append(dump_jpegs(avi, folder, imageio_ffmpeg.get_ffmpeg_exe()))
            sources.append(str(folder))
        else:
            n_frames.append(rec.n_frames)
            sources.append(str(avi))
    n = np.array(n_frames)
    plan = train_plan(lc, n, np.full(len(n), 240), np.full(len(n), 320), epoch=0)
    mean = np.array(lc.mean, np.float32)
    return [
        (
            sources[r["index"]],
            r["frames"].tolist(),
            float(r["scale"]),
            int(r["corner"]),
            int(r["flip"]),
            lc.size,
            mean,
        )
        for r in plan
    ]


def run_baseline(cfg, workers: int, measure: Callable) -> dict:
    """Time the jpeg or pyav baseline with `workers` processes; returns measure()'s dict."""
    # JPEG frames are kept between runs (untimed preparation), keyed by the source folder
    tag = hashlib.sha1(str(Path(cfg.videos).resolve()).encode()).hexdigest()[:10]
    workdir = cfg.jpeg_dir or Path(tempfile.gettempdir()) / "ucf3d-bench-jpeg" / tag
    log.info("%s baseline: preparing (untimed) under %s", cfg.baseline, workdir)
    jobs = _jobs(cfg, cfg.baseline, workdir)
    fn = _jpeg_clip if cfg.baseline == "jpeg" else _pyav_clip
    ctx = mp.get_context("fork")
    with ctx.Pool(workers) as pool:
        pids = [p.pid for p in pool._pool]  # noqa: SLF001 - worker pids for CPU accounting
        parent = mp.current_process().pid

        def batches() -> Iterator[int]:
            bs = cfg.loader.batch_size
            buf = []  # batches run across epochs (a batch may hold more clips than one epoch)
            while True:
                for clip in pool.imap(fn, jobs, chunksize=2):
                    buf.append(clip)
                    if len(buf) == bs:
                        np.stack(buf)  # collate, as a DataLoader would
                        yield bs
                        buf = []

        return measure(batches(), cfg.seconds, cfg.warmup, lambda: cpu_seconds([parent, *pids]))
