"""Raw video -> normalised clips for predict, as video-mode eval sees them.

`ucf3d extract` re-encodes every video at constant 25 fps with the short side bicubic-scaled to 128;
the loader's eval transform (Hara's Scale(size) + CenterCrop(size)) resizes the centred short-side
square to size x size (linear, antialiased) and subtracts Hara's mean on 0-255 (std 1). Here the
same chain runs as one ffmpeg filter graph, then numpy cuts the non-overlapping 16-frame windows.
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
    """All frames at `fps`, scaled like extract, centre square resized: (F, size, size, 3) RGB."""
    import imageio_ffmpeg

    from prep.encode import probe_source  # extract's own checks, so predict rejects the same

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: video not found")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: zero bytes")
    declared, problem = probe_source(path, fps)  # truncated, or no video stream
    if problem:
        raise ValueError(f"{path}: {problem}")
    s = short_side
    vf = ",".join([
        f"fps={fps}",  # extract: constant frame rate,
        f"scale=w='if(gte(iw,ih),-2,{s})':h='if(gte(iw,ih),{s},-2)':flags=bicubic",  # short side
        "format=yuv420p",  # what extract stores,
        # then DALI's decode to RGB: chroma upsampled bilinearly (swscale's default is coarser)
        "scale=flags=bilinear+full_chroma_int+full_chroma_inp+accurate_rnd", "format=rgb24",
        "crop='min(iw,ih)':'min(iw,ih)'",  # the centred short-side square (sampling.centre_roi)
        f"scale={size}:{size}:flags=bilinear",  # ... resized to size x size
    ])  # fmt: skip
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path),
           "-an", "-vf", vf, "-pix_fmt", "rgb24", "-f", "rawvideo", "-"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0 or proc.stderr.strip():  # as extract: any error met is a failure
        tail = [x for x in proc.stderr.decode(errors="replace").splitlines() if x.strip()]
        raise ValueError(f"{path}: undecodable: {' | '.join(tail[-3:]) or 'ffmpeg failed'}")
    frame_bytes = size * size * 3
    if not proc.stdout or len(proc.stdout) % frame_bytes:
        raise ValueError(f"{path}: undecodable: no frames decoded")
    n = len(proc.stdout) // frame_bytes
    if declared is not None and n + 2 < declared:
        raise ValueError(f"{path}: truncated: header declares ~{declared} frames, decoded {n}")
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
    """A video file as video-mode eval sees it: (N, 3, clip_len, size, size) float32.

    Refuses what `ucf3d extract` refuses, with its reasons (a video shorter than one clip too).
    """
    frames = decode_frames(path, size, short_side, fps)
    if len(frames) < clip_len:
        raise ValueError(f"{path}: too short: {len(frames)} frames < one {clip_len}-frame clip")
    return windows(frames, clip_len, size, mean, std)
