"""Tiny test world for the loader tests: VP9 videos whose frame index is drawn into their pixels.

Independent of prep (so loader tests run on their own): a minimal shard writer that follows
ondisk.py — webdataset tars of <key>.webm/.cls/.json/.meta.i32, manifests and a split summary.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import imageio_ffmpeg
import numpy as np

import ondisk

BITS = 8  # frame index as 8 black/white blocks in a 4 x 2 grid around the frame centre
BLOCK = 12  # block side in pixels (with gaps between blocks, so resizing does not mix them)


def block_centres(height: int, width: int) -> list[tuple[float, float]]:
    """(y, x) source-pixel centres of the index blocks, bit 0 first."""
    return [(height / 2 + dy, width / 2 + dx) for dy in (-10, 10) for dx in (-30, -10, 10, 30)]


def frame_pixels(index: int, height: int, width: int, seed: int) -> np.ndarray:
    """One HWC uint8 frame: a smooth moving texture, the index in binary blocks at the centre."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(seed)
    fx, fy, ph = rng.uniform(0.02, 0.06), rng.uniform(0.02, 0.06), rng.uniform(0, 6)
    base = np.stack(
        [
            127 + 100 * np.sin(fx * xx + ph + 0.2 * index),
            127 + 100 * np.cos(fy * yy + ph),
            127 + 100 * np.sin(fx * xx + fy * yy + ph),
        ],
        axis=-1,
    )
    img = base.astype(np.uint8)
    for b, (cy, cx) in enumerate(block_centres(height, width)):
        y0, x0 = int(cy) - BLOCK // 2, int(cx) - BLOCK // 2
        img[y0 : y0 + BLOCK, x0 : x0 + BLOCK] = 255 if (index >> b) & 1 else 0
    return img


def read_index(
    frame: np.ndarray,
    roi: tuple[float, float, float, float] | None = None,
    flip: bool = False,
    src_hw: tuple[int, int] | None = None,
) -> int:
    """Decode the index from an HWC frame: a full decoded frame, or an output crop of `roi`
    (y0, x0, y1, x1 in source pixels of a src_hw frame) resized to the frame's size, maybe
    flipped."""
    out_h, out_w = frame.shape[:2]
    height, width = src_hw if src_hw is not None else (out_h, out_w)
    y0, x0, y1, x1 = roi if roi is not None else (0, 0, height, width)
    value = 0
    for b, (cy, cx) in enumerate(block_centres(height, width)):
        oy = (cy - y0) * out_h / (y1 - y0)
        ox = (cx - x0) * out_w / (x1 - x0)
        if flip:
            ox = out_w - ox
        oy, ox = int(oy), int(ox)
        patch = frame[oy - 2 : oy + 2, ox - 2 : ox + 2].astype(np.float32)
        if patch.mean() > 127:
            value |= 1 << b
    return value


def write_video(
    path: Path, n_frames: int, height: int = 128, width: int = 170, seed: int = 0, gop: int = 16
) -> None:
    """Encode frame_pixels(0..n-1) as VP9 in WebM with the given GOP length."""
    frames = np.stack([frame_pixels(i, height, width, seed) for i in range(n_frames)])
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{width}x{height}",
        "-r",
        "25",
        "-i",
        "-",
        "-c:v",
        "libvpx-vp9",
        "-g",
        str(gop),
        "-crf",
        "20",
        "-b:v",
        "0",
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        "-pix_fmt",
        "yuv420p",
        str(path),
    ]
    subprocess.run(cmd, input=frames.tobytes(), check=True, capture_output=True)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))
    return info


def build_world(
    root: Path,
    n_classes: int = 3,
    per_class: int = 4,
    lengths: list[int] | None = None,
    per_shard: int = 5,
    split: int = 1,
) -> dict:
    """Write videos, shards, manifests and a summary under root; return paths and the records."""
    root = Path(root)
    vids, shards, manifests = root / "videos", root / "shards", root / "manifests"
    for d in (vids, shards, manifests):
        d.mkdir(parents=True, exist_ok=True)
    classes = [f"Class{c}" for c in range(n_classes)]
    items = []
    i = 0
    for label, cls in enumerate(classes):
        for g in range(per_class):
            n = lengths[i % len(lengths)] if lengths else 20 + 7 * i
            key = f"v_{cls}_g{g + 1:02d}_c01"
            height, width = (128, 170) if i % 3 else (128, 128 + 2 * i)
            path = vids / f"{key}.webm"
            write_video(path, n, height, width, seed=i)
            items.append((key, label, cls, n, height, width, path))
            i += 1
    subsets: dict[str, list[ondisk.ManifestRecord]] = {"train": [], "test": []}
    for s in range(0, len(items), per_shard):
        shard = f"split{split}-{s // per_shard:03d}.tar"
        with tarfile.open(shards / shard, "w", format=tarfile.USTAR_FORMAT) as tar:
            for key, label, _cls, n, height, width, path in items[s : s + per_shard]:
                data = path.read_bytes()
                _add(tar, f"{key}.webm", data)
                _add(tar, f"{key}.cls", str(label).encode())
                _add(tar, f"{key}.json", json.dumps({"key": key, "n_frames": n}).encode())
                _add(tar, f"{key}.meta.i32", ondisk.pack_meta(label, n, height, width))
        with tarfile.open(shards / shard) as tar:
            offsets = {m.name: m.offset_data for m in tar.getmembers()}
        for key, label, cls, n, _h, _w, path in items[s : s + per_shard]:
            data = path.read_bytes()
            rec = ondisk.ManifestRecord(
                key=key,
                label=label,
                cls=cls,
                n_frames=n,
                shard=shard,
                offset=offsets[f"{key}.webm"],
                size=len(data),
                ext="webm",
                sha256=hashlib.sha256(data).hexdigest(),
            )
            subsets["train"].append(rec)
            subsets["test"].append(rec)
    for subset, recs in subsets.items():
        ondisk.write_manifest(manifests / ondisk.manifest_name(split, subset), recs)
    summary = {
        "format": ondisk.FORMAT_NAME,
        "version": ondisk.FORMAT_VERSION,
        "split": split,
        "classes": classes,
        "shards_dir": str(shards),
        "subsets": {k: len(v) for k, v in subsets.items()},
    }
    (manifests / ondisk.summary_name(split)).write_text(json.dumps(summary))
    return {
        "root": root,
        "shards": shards,
        "manifests": manifests,
        "classes": classes,
        "records": subsets["train"],
        "items": items,
    }
