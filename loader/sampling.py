"""Clip plans (pure numpy): which frames of which video, with which crop, in which order, per rank.

Both decode backends consume the same plan, so a request gives the same clip on CPU and GPU, and
order, rank sharding and coverage are decided here, once, exactly.

Train (Hara et al. CVPR 2018, TemporalRandomCrop + MultiScaleCornerCrop + RandomHorizontalFlip):
one clip per video per epoch; the order is a permutation of the whole training set seeded by
(seed, epoch), identical on every rank; rank r takes positions r, r+W, r+2W, ... of it. The start
is uniform in [0, n - T] (quantised down to multiples of `start_align`); a video shorter than T is
loop-padded (frame i % n). Augmentation draws are made per video in permutation order, so a video's
clip in an epoch does not depend on the world size.

Eval: videos are dealt to ranks round-robin in manifest order (every video exactly once over all
ranks); "clip" takes `clips_per_video` uniformly spaced starts, "video" every non-overlapping
window (starts 0, T, 2T, ... while start + T <= n; one loop-padded window when n < T). With
`windows="hara"`, video mode scores what Hara's test loader does: windows start at 0, T, 2T, ...
while start < n - 1 (ceil((n - 1) / T) of them), and the trailing partial one is loop-padded from
its own frames (his LoopPadding), so it also covers a video's last frames.
"""

from __future__ import annotations

import numpy as np

from .config import LoaderConfig

CORNERS = ("c", "tl", "tr", "bl", "br")  # Hara's crop_positions, in his order


def request_dtype(clip_len: int) -> np.dtype:
    """One ClipRequest: a structured-array row. roi = (y0, x0, y1, x1) in source pixels."""
    return np.dtype(
        [
            ("index", np.int32),  # into Dataset.records / the manifest
            ("clip", np.int32),  # clip number within its video (eval), 0 in train
            ("start", np.int32),  # first frame
            ("frames", np.int32, (clip_len,)),  # exact frame indices (loop padding included)
            ("scale", np.float32),  # train: the drawn scale, eval: 1
            ("corner", np.int8),  # train: index into CORNERS, eval: 0 (centre)
            ("flip", np.int8),  # horizontal flip
            ("roi", np.float32, (4,)),  # crop window the augmentation resizes to size x size
        ]
    )


def hara_corner_roi(
    height: np.ndarray, width: np.ndarray, scale: np.ndarray, corner: np.ndarray
) -> np.ndarray:
    """MultiScaleCornerCrop's box, as (y0, x0, y1, x1), vectorised; integer pixels like PIL's crop.

    crop = int(min(h, w) * scale); centre: (w//2 - crop//2, h//2 - crop//2) to (w//2 + crop//2, ...)
    (so an odd crop loses a pixel, as in Hara's code); corners flush with the image borders.
    """
    h, w = np.asarray(height, np.int64), np.asarray(width, np.int64)
    crop = (np.minimum(h, w) * np.asarray(scale, np.float64)).astype(np.int64)
    c = np.asarray(corner)
    x0 = np.select(
        [c == 0, c == 1, c == 2, c == 3, c == 4], [w // 2 - crop // 2, 0, w - crop, 0, w - crop]
    )
    y0 = np.select(
        [c == 0, c == 1, c == 2, c == 3, c == 4], [h // 2 - crop // 2, 0, 0, h - crop, h - crop]
    )
    x1 = np.where(c == 0, w // 2 + crop // 2, x0 + crop)
    y1 = np.where(c == 0, h // 2 + crop // 2, y0 + crop)
    return np.stack([y0, x0, y1, x1], axis=-1).astype(np.float32)


def centre_roi(height: np.ndarray, width: np.ndarray) -> np.ndarray:
    """The region Scale(short side -> size) + CenterCrop(size) keeps: the centred square."""
    h, w = np.asarray(height, np.float64), np.asarray(width, np.float64)
    s = np.minimum(h, w)
    y0, x0 = (h - s) / 2, (w - s) / 2
    return np.stack([y0, x0, y0 + s, x0 + s], axis=-1).astype(np.float32)


def _frames(start: np.ndarray, n: np.ndarray, clip_len: int) -> np.ndarray:
    return ((start[:, None] + np.arange(clip_len)[None, :]) % n[:, None]).astype(np.int32)


def _window_frames(start: np.ndarray, n: np.ndarray, clip_len: int) -> np.ndarray:
    """Frames start.. of each window, a partial window loop-padded from its own frames (Hara's
    LoopPadding); the same as _frames wherever the window is whole or starts at 0."""
    own = np.minimum(n - start, clip_len)  # frames the window really has
    return (start[:, None] + np.arange(clip_len)[None, :] % own[:, None]).astype(np.int32)


def train_order(n_videos: int, seed: int, epoch: int) -> np.ndarray:
    """The epoch's permutation of the whole training set (same on every rank)."""
    return np.random.default_rng([seed, epoch, 0]).permutation(n_videos)


def train_plan(
    cfg: LoaderConfig,
    n_frames: np.ndarray,
    height: np.ndarray,
    width: np.ndarray,
    epoch: int,
    rank: int = 0,
    world: int = 1,
) -> np.ndarray:
    """This rank's train requests for `epoch`, in order."""
    n_frames = np.asarray(n_frames, np.int64)
    total, clip_len = len(n_frames), cfg.clip_len
    order = train_order(total, cfg.seed, epoch)
    rng = np.random.default_rng([cfg.seed, epoch, 1])
    u = rng.random(total)
    scale_idx = rng.integers(0, len(cfg.scales), total)
    corner = rng.integers(0, len(CORNERS), total)
    flip = rng.integers(0, 2, total) * int(cfg.flip)  # the same draws either way
    n = n_frames[order]
    slots = np.maximum(n - clip_len, 0) // cfg.start_align + 1  # allowed aligned starts
    start = np.minimum((u * slots).astype(np.int64), slots - 1) * cfg.start_align
    scale = np.asarray(cfg.scales, np.float64)[scale_idx]
    plan = np.zeros(total, request_dtype(clip_len))
    plan["index"], plan["start"] = order, start
    plan["frames"] = _frames(start, n, clip_len)
    plan["scale"], plan["corner"], plan["flip"] = scale, corner, flip
    plan["roi"] = hara_corner_roi(height[order], width[order], scale, corner)
    mine = plan[rank::world]
    if cfg.drop_last:  # the same number of full batches on every rank
        keep = (total // world) // cfg.batch_size * cfg.batch_size
        mine = mine[:keep]
    return mine


def eval_starts(
    n: int, mode: str, clip_len: int, clips_per_video: int, windows: str = "full"
) -> list[int]:
    """Clip starts for one video of n frames: Hara's uniformly spaced clips, or every window.

    windows="hara" (video mode): his test loader's `range(1, n, T)` on 1-based frames, i.e.
    ceil((n - 1) / T) windows, the last one partial; a 1-frame video still gets one.
    """
    if mode == "clip":
        last = max(n - clip_len, 0)
        return [int(round(x)) for x in np.linspace(0, last, clips_per_video)]
    if windows == "hara":
        return list(range(0, max(n - 1, 1), clip_len))
    if n < clip_len:
        return [0]
    return list(range(0, n - clip_len + 1, clip_len))


def eval_plan(
    cfg: LoaderConfig,
    n_frames: np.ndarray,
    height: np.ndarray,
    width: np.ndarray,
    rank: int = 0,
    world: int = 1,
) -> np.ndarray:
    """This rank's eval requests: its videos (round-robin), manifest order, clips in time order."""
    videos = np.arange(rank, len(n_frames), world)
    index, clip, start = [], [], []
    for v in videos:
        starts = eval_starts(
            int(n_frames[v]), cfg.mode, cfg.clip_len, cfg.clips_per_video, cfg.windows
        )
        index += [v] * len(starts)
        clip += range(len(starts))
        start += starts
    plan = np.zeros(len(index), request_dtype(cfg.clip_len))
    idx = np.asarray(index, np.int64)
    plan["index"], plan["clip"], plan["start"] = idx, clip, start
    plan["frames"] = _window_frames(
        plan["start"].astype(np.int64), np.asarray(n_frames)[idx], cfg.clip_len
    )
    plan["scale"] = 1.0
    plan["roi"] = centre_roi(np.asarray(height)[idx], np.asarray(width)[idx])
    return plan


def epoch_plan(
    cfg: LoaderConfig,
    n_frames: np.ndarray,
    height: np.ndarray,
    width: np.ndarray,
    epoch: int,
    rank: int = 0,
    world: int = 1,
) -> np.ndarray:
    """train_plan for mode "train", else eval_plan (the same every epoch)."""
    if cfg.mode == "train":
        return train_plan(cfg, n_frames, height, width, epoch, rank, world)
    return eval_plan(cfg, n_frames, height, width, rank, world)
