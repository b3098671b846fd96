"""A synthetic HMDB-51: synth's motion classes in HMDB-51's layout and split files, hostile names.

OUT/hmdb51_org/<class>/<title>_<class>_f_cm_np1_fr_med_<clip>.avi (xvid in AVI, 320x240, 25 fps;
classes are synth's motions in snake case, `move_left`, ...) and OUT/testTrainMulti_7030_splits/
<class>_test_split{1,2,3}.txt, one line `<video>.avi <flag> ` per video (1 train, 2 test, 0 not
used). A group is one source "movie" (one scene, one title). The titles (TITLES) carry what HMDB's
real names carry: `#`, `&`, `(`, `[`, `!`, `;`, `'`, `+`, commas, several dots, a space, non-ASCII
letters, 150 characters, and two titles that are equal once sanitised. The last group is flagged 0
in every split; of the others, group g (r = (g - 1) mod 5) is tested in split r + 1 (r <= 2), not
used in split k when r = (k + 2) mod 5, and trained on otherwise.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from prep.ffmpeg import check_ffmpeg
from prep.synth import FPS, MIN_FRAMES, MOTIONS, N_SPLITS, SynthConfig, _Job, _write_job
from prep.workers import WorkerPool

log = logging.getLogger(__name__)

VIDEOS, SPLITS = "hmdb51_org", "testTrainMulti_7030_splits"
TITLES = (  # class c's group g is titled TITLES[(g - 1 + c) mod 8]: 4 classes use them all
    "Space Odyssey 2001",
    "A_" + "Very_" * 28 + "Long_Title",  # 150 characters
    "#20_Rhythm_&_Blues_(Live)",
    "Rock_'n'_Roll+Friends,_Part_1",
    "Fight_Club_(1999)",
    "Fight_Club_[1999]",  # the same as the one before once sanitised: only the hash tells
    "Dr._Jekyll_and_Mr._Hyde...(1931)",
    "[HD]_Crème_brûlée!!!;_Vol._2",
)


def class_name(index: int) -> str:
    """synth's motion `index` as an HMDB-style class name: MoveLeft -> move_left."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", MOTIONS[index].name).lower()


def video_name(index: int, group: int, clip: int) -> str:
    """The file name of class `index`'s clip `clip` of group `group`, HMDB-style."""
    i, n = group - 1 + index, len(TITLES)
    title = TITLES[i % n] + (f"_{i // n}" if i >= n else "")
    return f"{title}_{class_name(index)}_f_cm_np1_fr_med_{clip - 1}.avi"


def flag(group: int, groups: int, split: int) -> int:
    """HMDB's flag of `group` in `split`: 1 train, 2 test, 0 not used (see the module docstring)."""
    if group == groups:
        return 0
    r = (group - 1) % 5
    if r == split - 1:
        return 2
    return 0 if r == (split + 2) % 5 else 1


def split_files(classes: int, groups: int, clips: int) -> dict[str, str]:
    """File name -> text of every `<class>_test_split<N>.txt`, lines sorted by video name."""
    files = {}
    for ci in range(classes):
        for k in range(1, N_SPLITS + 1):
            lines = sorted(
                f"{video_name(ci, g, c)} {flag(g, groups, k)} \n"  # HMDB's trailing space
                for g in range(1, groups + 1)
                for c in range(1, clips + 1)
            )
            files[f"{class_name(ci)}_test_split{k}.txt"] = "".join(lines)
    return files


def synth_hmdb(cfg: SynthConfig, progress: Callable[..., None] | None = None) -> dict:
    """Write the synthetic HMDB-51 under cfg.out; return counts. Deterministic in cfg.seed."""
    if not 1 <= cfg.classes <= len(MOTIONS):
        raise ValueError(f"--classes must be between 1 and {len(MOTIONS)}, got {cfg.classes}")
    if cfg.groups < 4 or cfg.clips < 1 or cfg.seconds <= 0:
        raise ValueError("hmdb51 needs --groups >= 4 (a train, a test and an unused group per "
                         "split); --clips and --seconds must be positive")  # fmt: skip
    check_ffmpeg(cfg.ffmpeg, "libxvid")
    classes = [class_name(i) for i in range(cfg.classes)]
    videos, lists = Path(cfg.out) / VIDEOS, Path(cfg.out) / SPLITS
    lists.mkdir(parents=True, exist_ok=True)
    for name, text in split_files(cfg.classes, cfg.groups, cfg.clips).items():
        (lists / name).write_text(text, encoding="utf-8")
    jobs = []
    for ci, cls in enumerate(classes):
        (videos / cls).mkdir(parents=True, exist_ok=True)
        for g in range(1, cfg.groups + 1):
            for c in range(1, cfg.clips + 1):
                rng = np.random.default_rng([cfg.seed, 3, ci, g, c])
                n = max(MIN_FRAMES, round(cfg.seconds * FPS * rng.uniform(0.7, 1.3)))
                path = videos / cls / video_name(ci, g, c)
                jobs.append(_Job(path, MOTIONS[ci], g, c, ci, n, cfg.seed, cfg.ffmpeg))
    if progress:
        progress(0, total=len(jobs))
    with WorkerPool(cfg.jobs or os.cpu_count() or 1) as pool:
        for _ in pool.imap_unordered(_write_job, jobs):
            if progress:
                progress(1)
    frames = sum(j.n_frames for j in jobs)
    log.info("wrote %d videos (%d frames) of %d classes to %s", len(jobs), frames, len(classes),
             videos)  # fmt: skip
    return {"videos": len(jobs), "classes": len(classes), "frames": frames, "root": str(cfg.out)}
