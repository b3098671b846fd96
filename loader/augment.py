"""DALI graph pieces shared by both backends: Hara's crops, flip, normalisation, FHWC -> CFHW.

Device-agnostic: `frames` may live on "cpu" or "gpu"; the per-sample parameters are CPU DataNodes
(argument inputs) computed in Python from the clip plan (loader.sampling), which knows each video's
height and width — so both backends crop exactly the same pixels.

Hara et al.'s spatial transforms and how they map here:
- train: MultiScaleCornerCrop (square of int(scale * short side) at centre/TL/TR/BL/BR, PIL bilinear
  resize to 112) + RandomHorizontalFlip, one draw per clip -> ONE fn.resize over the crop window
  (roi_start/roi_end, linear; Pillow's bilinear also antialiases when shrinking, which only the
  scale-1 crops do (128 -> 112), so that is cfg.antialias, off by default for speed); the flip is
  folded into the window (a mirrored ROI), so crop + resize + flip are one operator. Then either
  fn.crop_mirror_normalize for (x - mean) / std on 0-255, transpose to CFHW and cast (output
  "float", the CPU path's default), or nothing: uint8 FHWC leaves DALI and the consumer normalises
  it on its own device and stream (output "uint8", the GPU path's default: fewer kernels and a
  quarter of the bytes on DALI's side, and no DALI work queued behind training).
  Crop-inside-resize resamples the window only (its edge taps reach the pixels just outside
  it, clamped at the frame's border), so it is cheaper than resize-then-crop.
  On the NVDEC path the whole frames leave DALI instead and the consumer's hand-over kernel
  samples the same window the same way as it normalises (loader.handover.crop_resize_into,
  LoaderConfig.gpu_resize; `flip_folded` gives it the windows): DALI's two resampling kernels a
  chunk no longer run beside the training step.
- eval: Scale(112) (short side to 112) + CenterCrop(112). Scaling then centre-cropping equals
  resizing the centred short-side square, so the loader uses the same one-step ROI resize with
  sampling.centre_roi (and flip 0); `center_crop_eval` is the literal two-step form, kept as the
  reference the tests compare against (they agree to sub-pixel rounding).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from nvidia.dali import fn, types

from .config import LoaderConfig

DALI_DTYPES = {"float32": types.FLOAT, "float16": types.FLOAT16}
PARAM_DTYPES = (types.FLOAT, types.FLOAT)  # roi_start, roi_end (x ends swapped for a flip)


def param_inputs(source: Callable[[], Any] | None = None, name: str = "aug") -> tuple:
    """External sources (roi_start, roi_end) for augment(); fed with param_feed(batch)."""
    if source is None:  # fed with Pipeline.feed_input(f"{name}_{i}", ...)
        return tuple(
            fn.external_source(name=f"{name}_{i}", dtype=dt, batch=True)
            for i, dt in enumerate(PARAM_DTYPES)
        )
    return tuple(
        fn.external_source(source=source, num_outputs=2, batch=True, dtype=list(PARAM_DTYPES))
    )


def param_feed(requests: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-sample (roi_start [y0, x0], roi_end [y1, x1]) for a batch of requests.

    A flip is folded into the window: fn.resize mirrors a dimension whose ROI end lies before its
    start, so crop, resize and flip are one GPU kernel per chunk (no separate mirror pass).
    """
    roi = flip_folded(requests)
    return [r[:2].copy() for r in roi], [r[2:].copy() for r in roi]


def flip_folded(requests: np.ndarray) -> np.ndarray:
    """(N, 4) float32 y0, x0, y1, x1 crop windows of `requests`, a flip folded in (x ends
    swapped): what fn.resize is given (param_feed), and the hand-over kernel where it crops
    (LoaderConfig.gpu_resize "kernel", loader.handover.crop_resize_into)."""
    roi = np.array(requests["roi"], np.float32).reshape(-1, 4)
    flip = requests["flip"].astype(bool)
    roi[flip, 1], roi[flip, 3] = roi[flip, 3], roi[flip, 1].copy()
    return roi


def normalize(frames: Any, cfg: LoaderConfig) -> Any:
    """(size, size) FHWC uint8 -> CFHW cfg.dtype: (x - mean) / std, transpose (output "float")."""
    return fn.crop_mirror_normalize(
        frames,
        mean=list(cfg.mean),
        std=list(cfg.std),
        dtype=DALI_DTYPES[cfg.dtype],
        output_layout="CFHW",
    )


def crop_resize(frames: Any, roi_start: Any, roi_end: Any, cfg: LoaderConfig) -> Any:
    """The plan's window (flip folded in) resized to size x size: FHWC uint8 in and out."""
    return fn.resize(
        frames,
        roi_start=roi_start,
        roi_end=roi_end,
        size=[cfg.size, cfg.size],
        interp_type=types.INTERP_LINEAR,
        antialias=cfg.antialias,
    )


def center_crop_eval(frames: Any, cfg: LoaderConfig) -> Any:
    """Hara's eval transform literally: short side -> size (bilinear), centre crop size x size."""
    scaled = fn.resize(
        frames, resize_shorter=cfg.size, interp_type=types.INTERP_LINEAR, antialias=cfg.antialias
    )
    crop = fn.crop(scaled, crop=(cfg.size, cfg.size), crop_pos_x=0.5, crop_pos_y=0.5)
    return crop if cfg.clip_output() == "uint8" else normalize(crop, cfg)


def augment(frames: Any, params: tuple, cfg: LoaderConfig) -> Any:
    """What every backend applies to decoded FHWC uint8 frames: the plan's crop window + flip.

    train: the drawn corner crop and flip; clip/video: the centred short-side square, no flip
    (= Scale + CenterCrop, see the module docstring). Output "uint8": (T, size, size, 3) uint8,
    normalised by the consumer (loader.bridge) on its own device and stream; "float": normalised
    here, (3, T, size, size) cfg.dtype.
    """
    roi_start, roi_end = params
    crop = crop_resize(frames, roi_start, roi_end, cfg)
    return crop if cfg.clip_output() == "uint8" else normalize(crop, cfg)
