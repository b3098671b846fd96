"""Decode-backend protocol: what ClipLoader asks of loader.cpu.CpuBackend/loader.gpu.GpuBackend.

A backend is constructed as ``Backend(cfg: LoaderConfig, dataset: loader.source.Dataset)`` and must
implement:

``run(batches: Iterator[PlanBatch]) -> Iterator[tuple[clips, PlanBatch]]``
    For every PlanBatch pulled from `batches`, yield exactly one ``(clips, batch)`` pair, **in the
    same order** (the PlanBatch object itself is handed back, so keys and labels stay with their
    clips). `clips` is one DALI output for the whole batch: a dense ``TensorListCPU`` or
    ``TensorListGPU`` (or its ``.as_tensor()``) in the form ``cfg.clip_output()`` names: "float",
    ``(len(batch), 3, T, size, size)``, layout "CFHW" per sample, dtype ``cfg.dtype``; or "uint8",
    ``(len(batch), T, size, size, 3)`` "FHWC" uint8, which loader.bridge normalises; produced by
    ``loader.augment.augment(frames, params, cfg)`` from the frames ``batch.requests["frames"]``
    of video ``batch.requests["index"]`` — so that a request gives the same clip on every
    backend. The last batch of an epoch may be smaller than
    ``cfg.batch_size``. The backend may pull ahead (prefetch) from `batches`. Output buffers
    must stay valid while the caller holds them (DALI's default dynamic executor does this), since
    they reach Paddle zero-copy through DLPack. If the consumer stops early (the generator is
    closed), the next ``run`` call must start clean. Errors about a sample raise
    ``loader.source.LoaderError`` naming the shard and the key.

    Where the hand-over kernel crops (``cfg.resizer() == "kernel"``, the NVDEC path's default,
    and the kernel can run here) the GPU backend yields a ``Frames`` instead: the uncropped
    frames and each clip's window, which the consumer's hand-over crops, resizes and normalises
    (loader.bridge, loader.handover).

    `clips` may also be a list of such outputs (per-pipeline chunks of one batch, or the hybrid
    backend's GPU chunks then CPU part, concatenated in order by ``loader.bridge.to_paddle``); only
    the first ``len(batch)`` samples count, so a last chunk may be padded.

``close() -> None``
    Release pipelines, threads and files.

A backend may take more at construction: ``GpuBackend(cfg, dataset, planner=ClipLoader.batches)``
gets a planner (epoch -> PlanBatches) so that its NVDEC pipelines can hold several epochs' requests
and build the next ones in the background (loader.gpu); ``CpuBackend(cfg, dataset, planner)`` so
that its feed runs on into the next epoch without draining (loader.cpu).

The augmentation parameters of a batch come from ``loader.augment.param_feed(batch)`` (a tuple of
per-sample arrays for the external sources that ``loader.augment.param_inputs`` creates): feed them
in the same order as the frames.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .source import Dataset


@dataclass(frozen=True)
class Frames:
    """A batch's NVDEC frames, whole, with the crop windows the hand-over kernel resizes them
    from (LoaderConfig.resizer() "kernel"): what GpuBackend yields in place of a list of
    cropped chunks. loader.bridge (and the stand-in's to_torch) crop, resize, flip and normalise
    them in one kernel per 32 clips (loader.handover.crop_resize_into)."""

    chunks: list[Any]  # DALI TensorListGPU per pipeline chunk: (T, H, W, 3) uint8 samples
    rois: np.ndarray  # (len(batch), 4) float32: loader.augment.flip_folded of the requests


@dataclass(frozen=True)
class PlanBatch:
    """One batch of clip requests with what the caller needs to label the output."""

    epoch: int
    number: int  # batch number within the epoch on this rank
    requests: np.ndarray  # structured array of loader.sampling.request_dtype rows
    keys: list[str]  # video key of each request
    labels: np.ndarray  # int64 label of each request

    def __len__(self) -> int:
        return len(self.requests)


def make_batches(
    dataset: Dataset, plan: np.ndarray, batch_size: int, epoch: int
) -> list[PlanBatch]:
    """Cut a plan into PlanBatches (the last may be partial)."""
    out = []
    for number, start in enumerate(range(0, len(plan), batch_size)):
        req = plan[start : start + batch_size]
        recs = [dataset.records[i] for i in req["index"]]
        out.append(
            PlanBatch(
                epoch,
                number,
                req,
                [r.key for r in recs],
                np.array([r.label for r in recs], np.int64),
            )
        )
    return out


class Backend(Protocol):
    """See the module docstring: run() yields (clips, batch) in input order; close() frees."""

    def run(self, batches: Iterator[PlanBatch]) -> Iterator[tuple[Any, PlanBatch]]: ...

    def close(self) -> None: ...
