"""Raw video -> normalised clips for predict: 25 fps, short side 128, centre crop, 16-frame windows.

The numpy twin of the loader's video-mode eval. Frames go through the same ffmpeg filters as
`ucf3d extract` (constant 25 fps, bicubic scale to short side 128, other side even); the loader then
centre-crops `size` and subtracts Hara's mean on the 0-255 scale (std 1).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from train.config import MEAN, STD

SHORT_SIDE = 128
FPS = 25


def decode_frames(
    path: Path, size: int = 112, short_side: int = SHORT_SIDE, fps: int = FPS
) -> np.ndarray:
    """All frames at `fps`, scaled like extract, centre-cropped: (F, size, size, 3) uint8 RGB."""
    import imageio_ffmpeg

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: video not found")
    if size > short_side:
        raise ValueError(f"crop {size} is larger than the short side {short_side}")
    s = short_side
    vf = (
        f"fps={fps},scale=w='if(gte(iw,ih),-2,{s})':h='if(gte(iw,ih),{s},-2)':flags=bicubic,"
        f"crop={size}:{size}"  # centred: x = (in_w - size) / 2, as the loader's eval crop
    )
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path),
           "-an", "-vf", vf, "-pix_fmt", "rgb24", "-f", "rawvideo", "-"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise ValueError(f"{path}: cannot decode video ({tail[0]})")
    frame_bytes = size * size * 3
    if not proc.stdout or len(proc.stdout) % frame_bytes:
        raise ValueError(f"{path}: no frames decoded")
    return np.frombuffer(proc.stdout, np.uint8).reshape(-1, size, size, 3)


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
    x = center_crop(frames[: n * clip_len], size).astype(np.float32)  # (n*T, S, S, 3), no-op here
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
    fps: int = FPS,
) -> np.ndarray:
    """A video file as video-mode eval sees it: (N, 3, clip_len, size, size) float32."""
    return windows(decode_frames(path, size, short_side, fps), clip_len, size, mean, std)
