"""A synthetic UCF-101: textured objects whose classes differ only by motion, in UCF's exact layout.

OUT/UCF-101/<Class>/v_<Class>_gGG_cCC.avi (xvid in AVI, 320x240, 25 fps) and OUT/ucfTrainTestlist/
(classInd.txt, trainlist0{1,2,3}.txt, testlist0{1,2,3}.txt; split k tests groups 7(k-1)+1 .. 7k).
Every class draws the same kinds of objects on the same kinds of backgrounds; only the motion over
time (direction, speed, rotation, zoom, oscillation) tells them apart, so no single frame does.
Scenes (background, object texture, size) depend on the group only, so test groups are unseen.
Like UCF-101's `HandstandPushups` folder holding `v_HandStandPushups_*` files, the `PushLeft`
folder holds `v_Pushleft_*` files: labels must come from folders and classInd.txt.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prep.ffmpeg import check_ffmpeg, run_ffmpeg
from prep.workers import WorkerPool

log = logging.getLogger(__name__)

WIDTH, HEIGHT, FPS = 320, 240, 25
PACE = 2.0  # every motion runs this many times faster than its table rate: clear at 64 px
MIN_FRAMES = 20  # every generated clip holds at least one 16-frame clip with room to spare
N_SPLITS, GROUPS_PER_SPLIT = 3, 7


@dataclass(frozen=True)
class SynthConfig:
    out: Path
    classes: int = 10
    groups: int = 25
    clips: int = 1  # clips per group and class
    seconds: float = 3.0  # mean length; each clip is 0.7x .. 1.3x this
    seed: int = 0
    jobs: int = 0  # 0: all cores
    ffmpeg: str | None = None
    dataset: str = "ucf101"  # or "hmdb51": HMDB-51's layout and split files (prep.synth_hmdb)


@dataclass(frozen=True)
class Motion:
    """How a class moves its object; all rates are per frame at 25 fps, pixels at 320x240."""

    name: str
    file_name: str = ""  # the name used in file names, if it differs from the folder (UCF quirk)
    vx: float = 0.0
    vy: float = 0.0
    spin: float = 0.0  # radians per frame, positive = clockwise on screen
    zoom: float = 0.0  # log-scale change per frame (sawtooth), + grows, - shrinks
    pulse: float = 0.0  # period in frames of a scale oscillation
    osc: tuple[float, float, float] = (0.0, 0.0, 0.0)  # amplitude x, amplitude y, period
    orbit: tuple[float, float] = (0.0, 0.0)  # radius, radians per frame (+ clockwise)


def _motion_table() -> list[Motion]:
    table = [
        Motion("MoveLeft", vx=-3),
        Motion("MoveRight", vx=3),
        Motion("PushLeft", file_name="Pushleft", vx=-8),  # same direction as MoveLeft, faster
        Motion("MoveUp", vy=-3),
        Motion("MoveDown", vy=3),
        Motion("SpinClockwise", spin=0.08),
        Motion("SpinCounterClockwise", spin=-0.08),
        Motion("ZoomIn", zoom=0.025),
        Motion("ZoomOut", zoom=-0.025),
        Motion("ShakeSideways", osc=(20, 0, 20)),
    ]
    dirs = {
        "Left": (-1, 0),
        "Right": (1, 0),
        "Up": (0, -1),
        "Down": (0, 1),
        "UpLeft": (-0.7, -0.7),
        "UpRight": (0.7, -0.7),
        "DownLeft": (-0.7, 0.7),
        "DownRight": (0.7, 0.7),
    }
    for verb, speed in (("Move", 3), ("Push", 8), ("Creep", 1.2), ("Dash", 12), ("Glide", 5)):
        for d, (ux, uy) in dirs.items():
            table.append(Motion(f"{verb}{d}", vx=speed * ux, vy=speed * uy))
    for verb, rate in (("Spin", 0.08), ("Twirl", 0.2), ("Turn", 0.035), ("Whirl", 0.3)):
        table += [
            Motion(f"{verb}Clockwise", spin=rate),
            Motion(f"{verb}CounterClockwise", spin=-rate),
        ]
    for verb, rate in (("Zoom", 0.025), ("Pop", 0.06), ("Drift", 0.012)):
        table += [Motion(f"{verb}In", zoom=rate), Motion(f"{verb}Out", zoom=-rate)]
    axes = {
        "Sideways": (1, 0),
        "Vertically": (0, 1),
        "Diagonally": (0.7, 0.7),
        "Crosswise": (0.7, -0.7),
    }
    for verb, amp, period in (
        ("Shake", 20, 20),
        ("Wave", 40, 50),
        ("Jitter", 6, 6),
        ("Sway", 30, 80),
        ("Vibrate", 3, 4),
    ):
        for a, (ax, ay) in axes.items():
            table.append(Motion(f"{verb}{a}", osc=(amp * ax, amp * ay, period)))
    for verb, radius, rate in (
        ("Circle", 40, 0.1),
        ("Loop", 25, 0.25),
        ("Orbit", 70, 0.05),
        ("Swirl", 15, 0.4),
    ):
        table += [
            Motion(f"{verb}Clockwise", orbit=(radius, rate)),
            Motion(f"{verb}CounterClockwise", orbit=(radius, -rate)),
        ]
    for d, (ux, uy) in list(dirs.items())[:4]:
        turn = 0.1 if ux + uy > 0 else -0.1
        table += [
            Motion(f"Roll{d}", vx=3 * ux, vy=3 * uy, spin=turn),
            Motion(f"Tumble{d}", vx=3 * ux, vy=3 * uy, spin=-turn),
            Motion(f"Approach{d}", vx=3 * ux, vy=3 * uy, zoom=0.02),
            Motion(f"Retreat{d}", vx=3 * ux, vy=3 * uy, zoom=-0.02),
        ]
    table += [Motion("Pulse", pulse=12), Motion("Throb", pulse=30), Motion("Breathe", pulse=60)]
    seen: dict[str, Motion] = {}
    for m in table:  # the first ten come first; later duplicates of a name are dropped
        seen.setdefault(m.name, m)
    return list(seen.values())


MOTIONS = _motion_table()


def class_names(n: int) -> list[str]:
    """The first n synthetic class names, in label order."""
    if not 1 <= n <= len(MOTIONS):
        raise ValueError(f"--classes must be between 1 and {len(MOTIONS)}, got {n}")
    return [m.name for m in MOTIONS[:n]]


def video_name(motion: Motion, group: int, clip: int) -> str:
    return f"v_{motion.file_name or motion.name}_g{group:02d}_c{clip:02d}.avi"


def _texture(
    rng: np.random.Generator,
    h: int,
    w: int,
    cells: int,
    contrast: float = 60.0,
    base: np.ndarray | None = None,
) -> np.ndarray:
    """A blocky colour texture with fine grain, (h, w, 3) float32 in 0..255."""
    base = rng.uniform(0, 255, size=3) if base is None else base
    coarse = rng.normal(0, contrast, size=(cells, cells, 3)) + base
    ys = np.arange(h) * cells // h
    xs = np.arange(w) * cells // w
    tex = coarse[ys][:, xs] + rng.normal(0, contrast / 5, size=(h, w, 3))
    return np.clip(tex, 0, 255).astype(np.float32)


@dataclass(frozen=True)
class _Job:
    path: Path
    motion: Motion
    group: int
    clip: int
    class_index: int
    n_frames: int
    seed: int
    ffmpeg: str | None


def render(job: _Job) -> np.ndarray:
    """All frames of one clip, (T, H, W, 3) uint8 RGB."""
    scene = np.random.default_rng([job.seed, 1, job.group])  # shared by all classes of a group
    # figure and ground: a muted background, and an object of full contrast around the
    # background's complementary colour, so the motion (the only class cue) is easy to see
    background = _texture(scene, HEIGHT, WIDTH, cells=int(scene.integers(6, 16)), contrast=20.0)
    size = int(scene.integers(96, 128))
    complement = 255.0 - background.mean(axis=(0, 1))
    obj = _texture(scene, size, size, cells=int(scene.integers(3, 7)), base=complement)
    rng = np.random.default_rng([job.seed, 2, job.group, job.clip, job.class_index])
    m = job.motion
    x0, y0 = rng.uniform(0.25, 0.75) * WIDTH, rng.uniform(0.25, 0.75) * HEIGHT  # in the crop
    angle0, phase = rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi)
    jitter = PACE * rng.uniform(0.85, 1.15)  # speeds vary a little per clip
    # sensor noise: a small bank of noisy backgrounds cycled over time (cheaper than fresh draws)
    noise = rng.integers(-3, 4, size=(7, HEIGHT, WIDTH, 1), dtype=np.int16)
    bank = np.clip(background.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    frames = bank[np.arange(job.n_frames) % len(bank)]
    obj = obj.astype(np.uint8)
    for t in range(job.n_frames):
        s = jitter * t
        cx = x0 + m.vx * s + m.osc[0] * math.sin(2 * math.pi * s / (m.osc[2] or 1) + phase)
        cy = y0 + m.vy * s + m.osc[1] * math.sin(2 * math.pi * s / (m.osc[2] or 1) + phase)
        cx += m.orbit[0] * math.cos(m.orbit[1] * s + phase)
        cy += m.orbit[0] * math.sin(m.orbit[1] * s + phase)
        theta = angle0 + m.spin * s
        scale = 1.0
        if m.zoom:  # sawtooth in log scale between 0.5x and 2x, so size alone says nothing
            span = math.log(4.0)
            pos = (abs(m.zoom) * s + phase / (2 * math.pi) * span) % span
            scale = 0.5 * math.exp(pos if m.zoom > 0 else span - pos)
        if m.pulse:
            scale = 1.0 + 0.4 * math.sin(2 * math.pi * s / m.pulse + phase)
        # draw in a window around the object; indices wrap, so objects leaving one edge re-enter
        r = int(size * scale * 0.75) + 2
        d = np.arange(-r, r + 1, dtype=np.float32)
        ix, iy = np.round(cx).astype(int), np.round(cy).astype(int)
        dx, dy = d[None, :] + (ix - cx), d[:, None] + (iy - cy)
        c, sn = math.cos(theta), math.sin(theta)
        u = (c * dx + sn * dy) / scale + size / 2
        v = (-sn * dx + c * dy) / scale + size / 2
        inside = (u >= 0) & (u < size) & (v >= 0) & (v < size)
        window = np.ix_((iy + np.arange(-r, r + 1)) % HEIGHT, (ix + np.arange(-r, r + 1)) % WIDTH)
        patch = frames[t][window]
        patch[inside] = obj[v[inside].astype(np.int32), u[inside].astype(np.int32)]
        frames[t][window] = patch
    return frames


def _write_job(job: _Job) -> Path:
    """Render one clip and encode it as xvid AVI (written to a .tmp name, renamed when complete)."""
    frames = render(job)
    tmp = job.path.with_name(job.path.name + ".tmp")
    args = [
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{WIDTH}x{HEIGHT}",
        "-r",
        str(FPS),
        "-i",
        "-",
        "-c:v",
        "libxvid",
        "-q:v",
        "5",
        "-pix_fmt",
        "yuv420p",
        "-threads",
        "1",
        "-fflags",
        "+bitexact",
        "-flags:v",
        "+bitexact",
        "-f",
        "avi",
        "-y",
        str(tmp),
    ]
    run_ffmpeg(args, job.path, ffmpeg=job.ffmpeg, stdin=frames.tobytes())
    tmp.replace(job.path)
    return job.path


def write_clip(
    path: Path,
    class_index: int,
    group: int,
    clip: int,
    n_frames: int,
    seed: int = 0,
    ffmpeg: str | None = None,
) -> Path:
    """Write one synthetic clip of `n_frames` frames to `path` (tests use it to make odd inputs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    job = _Job(path, MOTIONS[class_index], group, clip, class_index, n_frames, seed, ffmpeg)
    return _write_job(job)


def split_lists(names: list[str], groups: int, clips: int) -> dict[str, str]:
    """The text of classInd.txt and the train/test lists, UCF-101 style (1-based labels)."""
    files = {"classInd.txt": "".join(f"{i} {n}\n" for i, n in enumerate(names, 1))}
    for k in range(1, N_SPLITS + 1):
        test_groups = range(GROUPS_PER_SPLIT * (k - 1) + 1, GROUPS_PER_SPLIT * k + 1)
        train, test = [], []
        for label, motion in enumerate(MOTIONS[: len(names)], 1):
            for g in range(1, groups + 1):
                for c in range(1, clips + 1):
                    rel = f"{motion.name}/{video_name(motion, g, c)}"
                    (test.append(rel) if g in test_groups else train.append(f"{rel} {label}"))
        files[f"trainlist0{k}.txt"] = "".join(line + "\n" for line in train)
        files[f"testlist0{k}.txt"] = "".join(line + "\n" for line in test)
    return files


def synth(cfg: SynthConfig, progress: Callable[..., None] | None = None) -> dict:
    """Write the synthetic dataset under cfg.out; return counts. Deterministic in cfg.seed."""
    if cfg.dataset == "hmdb51":
        from prep.synth_hmdb import synth_hmdb

        return synth_hmdb(cfg, progress)
    if cfg.dataset != "ucf101":
        raise ValueError(f"unknown dataset {cfg.dataset!r}; choose ucf101 or hmdb51")
    names = class_names(cfg.classes)
    if cfg.groups < 1 or cfg.clips < 1 or cfg.seconds <= 0:
        raise ValueError("--groups, --clips and --seconds must be positive")
    check_ffmpeg(cfg.ffmpeg, "libxvid")
    videos, lists = Path(cfg.out) / "UCF-101", Path(cfg.out) / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    for name, text in split_lists(names, cfg.groups, cfg.clips).items():
        (lists / name).write_text(text, encoding="utf-8")
    jobs = []
    for ci, motion in enumerate(MOTIONS[: cfg.classes]):
        (videos / motion.name).mkdir(parents=True, exist_ok=True)
        for g in range(1, cfg.groups + 1):
            for c in range(1, cfg.clips + 1):
                rng = np.random.default_rng([cfg.seed, 3, ci, g, c])
                n = max(MIN_FRAMES, round(cfg.seconds * FPS * rng.uniform(0.7, 1.3)))
                path = videos / motion.name / video_name(motion, g, c)
                jobs.append(_Job(path, motion, g, c, ci, n, cfg.seed, cfg.ffmpeg))
    if progress:
        progress(0, total=len(jobs))
    n_jobs = cfg.jobs or os.cpu_count() or 1
    with WorkerPool(n_jobs) as pool:  # Ctrl-C or a kill stops the workers too
        for _ in pool.imap_unordered(_write_job, jobs):
            if progress:
                progress(1)
    frames = sum(j.n_frames for j in jobs)
    log.info(
        "wrote %d videos (%d frames) of %d classes to %s", len(jobs), frames, len(names), videos
    )
    return {"videos": len(jobs), "classes": len(names), "frames": frames, "root": str(cfg.out)}
