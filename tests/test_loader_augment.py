"""The shared DALI augmentation against a numpy/PIL reference of Hara's crops (no decoding)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from nvidia.dali import fn, pipeline_def, types
from PIL import Image

from loader.augment import augment, center_crop_eval, param_feed
from loader.config import LoaderConfig
from loader.sampling import centre_roi, hara_corner_roi, request_dtype

T, HEIGHT, WIDTH = 4, 128, 170


def frames(seed: int = 0, freq: tuple[float, float] = (0.1, 0.3)) -> np.ndarray:
    """(T, H, W, 3) uint8 with texture at a few-pixel scale, so a misplaced crop shows."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    out = []
    for t in range(T):
        ch = [127 + 90 * np.sin(xx * f1 + yy * f2 + t) for f1, f2 in rng.uniform(*freq, (3, 2))]
        out.append(np.stack(ch, -1))
    return np.clip(out, 0, 255).astype(np.uint8)


def reference(clip: np.ndarray, roi: np.ndarray, flip: int, c: LoaderConfig) -> np.ndarray:
    """Hara's transform with PIL: crop box, bilinear resize, flip, minus mean / std -> CFHW."""
    y0, x0, y1, x1 = (int(v) for v in roi)
    out = []
    for f in clip:
        img = Image.fromarray(f).crop((x0, y0, x1, y1)).resize((c.size, c.size), Image.BILINEAR)
        a = np.asarray(img, np.float32)
        out.append(a[:, ::-1] if flip else a)
    x = (np.stack(out) - np.array(c.mean, np.float32)) / np.array(c.std, np.float32)
    return x.transpose(3, 0, 1, 2)


def run_augment(clip: np.ndarray, rows: np.ndarray, c: LoaderConfig, literal_eval: bool = False):
    feed = param_feed(rows)

    @pipeline_def(batch_size=len(rows), num_threads=1, device_id=None)
    def pipe():
        x = fn.external_source(source=lambda: [clip] * len(rows), layout="FHWC", batch=True)
        params = fn.external_source(
            source=lambda: feed, num_outputs=2, batch=True, dtype=[types.FLOAT, types.FLOAT]
        )
        return center_crop_eval(x, c) if literal_eval else augment(x, params, c)

    p = pipe()
    p.build()
    (out,) = p.run()
    return [np.array(out[i]) for i in range(len(rows))]


def rows_for(roi: np.ndarray, flip: np.ndarray) -> np.ndarray:
    rows = np.zeros(len(roi), request_dtype(16))
    rows["roi"], rows["flip"] = roi, flip
    return rows


CFG = LoaderConfig(manifests=Path("/none"), num_threads=1, std=(1.0, 2.0, 0.5))


def test_train_crops_match_reference() -> None:
    clip = frames()
    scales = np.repeat(CFG.scales, 5)
    corners = np.tile(np.arange(5), len(CFG.scales))
    roi = hara_corner_roi(np.full(25, HEIGHT), np.full(25, WIDTH), scales, corners)
    flip = np.arange(25) % 2
    outs = run_augment(clip, rows_for(roi, flip), CFG)
    for i, out in enumerate(outs):
        assert out.shape == (3, T, 112, 112) and out.dtype == np.float32
        ref = reference(clip, roi[i], flip[i], CFG)
        err = np.abs(out - ref) * np.array(CFG.std)[:, None, None, None]  # back to pixel units
        assert err.mean() < 2.0, (i, err.mean())
        # the same check fails if the window is off by 3 pixels or the flip is wrong
        wrong = reference(clip, roi[i] + np.array([0, 3, 0, 3]), flip[i], CFG)
        assert (
            np.abs(out - wrong) * np.array(CFG.std)[:, None, None, None]
        ).mean() > 3 * err.mean()
        unflipped = reference(clip, roi[i], 1 - flip[i], CFG)
        assert (np.abs(out - unflipped) * np.array(CFG.std)[:, None, None, None]).mean() > 10


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_eval_roi_equals_scale_then_centre_crop(dtype: str) -> None:
    c = LoaderConfig(manifests=Path("/none"), num_threads=1, dtype=dtype)
    clip = frames(1, freq=(0.02, 0.05))  # smooth: Hara's own rounding moves the window < 1 px
    rows = rows_for(centre_roi(np.array([HEIGHT]), np.array([WIDTH])), np.array([0]))
    ours = run_augment(clip, rows, c)[0]
    literal = run_augment(clip, rows, c, literal_eval=True)[0]
    assert ours.dtype == literal.dtype == np.dtype(dtype)
    assert ours.shape == literal.shape == (3, T, 112, 112)
    assert np.abs(ours.astype(np.float32) - literal.astype(np.float32)).mean() < 1.5
