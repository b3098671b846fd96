"""Raw video -> normalised clips for predict: decode, short side 128, centre crop, 16-frame windows.

The numpy twin of the loader's video-mode eval: prep scales every video to short side 128 (ffmpeg's
bicubic scaler), the loader centre-crops `size` and subtracts Hara's mean on the 0-255 scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from train.config import MEAN, STD

SHORT_SIDE = 128


def scaled_size(width: int, height: int, short_side: int = SHORT_SIDE) -> tuple[int, int]:
    """(width, height) with the short side = short_side, the other even (ffmpeg's scale=-2:128)."""
    if width >= height:
        return max(2, int(width * short_side / height) // 2 * 2), short_side
    return short_side, max(2, int(height * short_side / width) // 2 * 2)


def decode_frames(path: Path, short_side: int = SHORT_SIDE) -> np.ndarray:
    """All frames of the first video stream, scaled: (F, H, W, 3) uint8 RGB."""
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: video not found")
    frames = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path}: no video stream")
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                w, h = scaled_size(frame.width, frame.height, short_side)
                rgb = frame.reformat(width=w, height=h, format="rgb24", interpolation="BICUBIC")
                frames.append(rgb.to_ndarray())
    except av.FFmpegError as e:
        raise ValueError(f"{path}: cannot decode video ({e})") from e
    if not frames:
        raise ValueError(f"{path}: no frames decoded")
    return np.stack(frames)


def center_crop(frames: np.ndarray, size: int) -> np.ndarray:  # (F, H, W, 3) -> (F, size, size, 3)
    f, h, w, _ = frames.shape
    if h < size or w < size:
        raise ValueError(f"frames of {w}x{h} are smaller than the {size}x{size} crop")
    top, left = (h - size) // 2, (w - size) // 2
    return frames[:, top : top + size, left : left + size]


def windows(
    frames: np.ndarray,
    clip_len: int = 16,
    size: int = 112,
    mean: Sequence[float] = MEAN,
    std: Sequence[float] = STD,
) -> np.ndarray:
    """Every non-overlapping clip_len window, normalised: (N, 3, clip_len, size, size) float32.

    A video shorter than one window is looped to clip_len frames (Hara's LoopPadding).
    """
    if len(frames) < clip_len:
        frames = frames[np.arange(clip_len) % len(frames)]
    n = len(frames) // clip_len
    x = center_crop(frames[: n * clip_len], size).astype(np.float32)  # (n*T, S, S, 3)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    x = x.reshape(n, clip_len, size, size, 3)  # (N, T, H, W, C)
    return np.ascontiguousarray(x.transpose(0, 4, 1, 2, 3))  # (N, C, T, H, W)


def video_clips(
    path: Path,
    clip_len: int = 16,
    size: int = 112,
    short_side: int = SHORT_SIDE,
    mean: Sequence[float] = MEAN,
    std: Sequence[float] = STD,
) -> np.ndarray:
    """A video file as video-mode eval sees it: (N, 3, clip_len, size, size) float32."""
    return windows(decode_frames(path, short_side), clip_len, size, mean, std)
