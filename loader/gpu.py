"""GPU backend: NVDEC decoding through many concurrent `readers.video` pipelines over a file cache.

Why files and many pipelines (FINDINGS.md, docs/BENCHMARKS.md): DALI's in-memory GPU decoder
(`decoders.video(device="mixed")`) delivers ~100 clips/s on an H200, while the legacy file reader
`fn.readers.video(device="gpu")` with 16-32 pipelines keeps NVDEC busy at 4,500+ clips/s. So:

1. `stage_cache` copies every video of the subset out of its shard into a local directory, once,
   checking each one's sha256 against the manifest before it is renamed into place. File names
   carry the checksum (`<sha256[:16]>-<key>.<ext>`), so a re-extracted video never reuses a stale
   file, and a later run only checks that the file exists with the right size.
2. Each epoch, the clip plan is cut into chunks of `cfg.gpu_batch` requests; chunk k goes to
   pipeline k % P, whose `file_list` holds one line `path id start start+T` per request, in plan
   order. The reader returns exactly that window (frame numbers, no shuffling), so the GPU gives
   the clip the plan asked for, like the CPU backend. Pipelines are rebuilt per epoch (~0.2 s).
3. Crop windows and flips come from the plan through an external source in each pipeline, and the
   shared `loader.augment.augment` runs on the GPU frames.

A request whose frames are not one contiguous window (loop padding of a video shorter than T) is
not expressible as a file-list line: such videos are rejected up front, naming the key (extract
already refuses videos shorter than one clip).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from nvidia.dali import fn, pipeline_def, types

from .augment import augment, param_feed
from .backend import PlanBatch
from .config import LoaderConfig
from .source import Dataset, LoaderError, ShardReader

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """$UCF3D_CACHE, else ~/.cache/ucf3d/videos: must be a local disk for NVDEC to be fed."""
    env = os.environ.get("UCF3D_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "ucf3d" / "videos"


def cache_name(key: str, sha256: str, ext: str) -> str:
    return f"{sha256[:16]}-{key}.{ext}"


def stage_cache(dataset: Dataset, cache_dir: Path, verify: bool = False) -> list[Path]:
    """Local files for every record (copied from the shards and sha256-checked when missing)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    reader = ShardReader(dataset, verify=True)  # staging always checks the checksum
    paths, staged = [], 0
    try:
        for i, rec in enumerate(dataset.records):
            if any(c.isspace() for c in rec.key):
                raise LoaderError(f"{dataset.shard_path(i)}: sample {rec.key}: space in key")
            path = cache_dir / cache_name(rec.key, rec.sha256, rec.ext)
            if path.is_file() and path.stat().st_size == rec.size:
                if verify and _sha256(path) != rec.sha256:
                    raise LoaderError(
                        f"{path}: cached copy of {rec.key} does not match the manifest's sha256 "
                        "(delete it to stage it again)"
                    )
            else:
                data = reader.read(i)
                tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
                tmp.write_bytes(data.tobytes())
                tmp.replace(path)
                staged += 1
            paths.append(path)
    finally:
        reader.close()
    log.info("video cache %s: %d videos (%d staged now)", cache_dir, len(paths), staged)
    return paths


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class GpuBackend:
    """Backend protocol (loader.backend) on NVDEC: P concurrent readers.video pipelines."""

    def __init__(self, cfg: LoaderConfig, dataset: Dataset) -> None:
        short = np.flatnonzero(dataset.n_frames < cfg.clip_len)
        if len(short):
            rec = dataset.records[int(short[0])]
            raise LoaderError(
                f"{dataset.shard_path(int(short[0]))}: sample {rec.key}: {rec.n_frames} frames, "
                f"fewer than one {cfg.clip_len}-frame clip; decode='gpu' needs whole windows "
                "(use decode='cpu', which loop-pads)"
            )
        self.cfg = cfg
        self.dataset = dataset
        self.device_id = cfg.gpu_device()
        self.paths = stage_cache(dataset, cfg.cache_dir or default_cache_dir(), cfg.verify)
        self._tmp = tempfile.TemporaryDirectory(prefix="ucf3d-lists-")
        self._pipes: list[Any] = []
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ucf3d-prepare")
        self._prepared: tuple[list[PlanBatch], Future] | None = None
        self._lists = 0  # file-list name counter (current and prepared pipelines coexist)

    # -- one epoch's pipelines -----------------------------------------------------------------
    def _chunks(self, batches: list[PlanBatch]) -> list[tuple[int, np.ndarray]]:
        """(batch position, requests) chunks of at most gpu_batch, in plan order."""
        b = self.cfg.gpu_batch
        return [
            (pos, batch.requests[s : s + b])
            for pos, batch in enumerate(batches)
            for s in range(0, len(batch), b)
        ]

    def _build(self, chunks: list[tuple[int, np.ndarray]]) -> list[Any]:
        """Build one pipeline per file list and start each decoding its first iterations."""
        cfg, b = self.cfg, self.cfg.gpu_batch
        self._lists += 1
        n_pipes = min(cfg.gpu_pipelines, len(chunks))
        per_pipe: list[list[np.ndarray]] = [[] for _ in range(n_pipes)]
        for k, (_, req) in enumerate(chunks):
            frames = req["frames"]
            if not (frames == req["start"][:, None] + np.arange(cfg.clip_len)).all():
                raise LoaderError("decode='gpu' needs contiguous windows (no loop padding)")
            pad = np.concatenate([req, np.repeat(req[-1:], b - len(req))])  # full reader batch
            per_pipe[k % n_pipes].append(pad)
        pipes = []
        for p, reqs in enumerate(per_pipe):
            flat = np.concatenate(reqs)
            lst = Path(self._tmp.name) / f"list{self._lists}-pipe{p}.txt"
            lst.write_text(
                "".join(
                    f"{self.paths[r['index']]} {j} {r['start']} {r['start'] + cfg.clip_len}\n"
                    for j, r in enumerate(flat)
                )
            )
            pipes.append(self._pipeline(lst, iter(reqs), seed=cfg.seed + p, depth=len(reqs)))
        with ThreadPoolExecutor(len(pipes)) as pool:  # builds open files: overlap them
            for future in [pool.submit(pipe.build) for pipe in pipes]:
                future.result()
        for pipe in pipes:
            pipe.schedule_run()  # starts decoding now: fills the prefetch queue
        return pipes

    def _pipeline(
        self, file_list: Path, chunks: Iterator[np.ndarray], seed: int, depth: int
    ) -> Any:
        """One reader pipeline over `file_list`; `depth` chunks in all (never scheduled past)."""
        cfg = self.cfg

        def params() -> tuple[list[np.ndarray], ...]:
            return param_feed(next(chunks))  # StopIteration past the last chunk

        @pipeline_def(
            batch_size=cfg.gpu_batch,
            num_threads=cfg.gpu_threads,
            device_id=self.device_id,
            prefetch_queue_depth=min(cfg.prefetch, depth),
            seed=seed,
        )
        def graph():  # noqa: ANN202 - DALI graph definition
            frames, _ids = fn.readers.video(
                device="gpu",
                file_list=str(file_list),
                file_list_frame_num=True,
                file_list_include_preceding_frame=True,  # silences a deprecation note
                sequence_length=cfg.clip_len,
                random_shuffle=False,
                dtype=types.UINT8,
                name="video",
            )  # (T, H, W, 3) uint8 on the GPU
            roi_start, roi_end, flip = fn.external_source(
                source=params, num_outputs=3, batch=True,
                dtype=[types.FLOAT, types.FLOAT, types.INT32],
            )
            return augment(frames, (roi_start, roi_end, flip), cfg), _ids

        return graph()

    # -- Backend protocol ------------------------------------------------------------------------
    def run(self, batches: Iterator[PlanBatch]) -> Iterator[tuple[Any, PlanBatch]]:
        """Yield (list of TensorListGPU chunks, batch) per batch, in plan order.

        Each chunk holds gpu_batch clips; only a batch's last chunk can carry padding, so the
        batch is the first len(batch) clips of the chunks concatenated (loader.bridge.to_paddle).
        """
        todo = list(batches)
        if not todo:
            return
        chunks = self._chunks(todo)
        self.close_pipes()
        self._pipes = pipes = self._take_prepared(todo) or self._build(chunks)
        n_pipes = len(pipes)
        total = [len(range(p, len(chunks), n_pipes)) for p in range(n_pipes)]
        scheduled = [min(self.cfg.prefetch, t) for t in total]  # queued by _build
        outputs: list[Any] = []
        for k, (pos, req) in enumerate(chunks):
            p = k % n_pipes
            try:  # DALI's scheduled API: outputs() then schedule_run() to keep the queue full
                clips, _ids = pipes[p].outputs()
                if scheduled[p] < total[p]:
                    pipes[p].schedule_run()
                    scheduled[p] += 1
            except RuntimeError as e:
                raise self._diagnose(e, req) from e
            outputs.append(clips)
            last = k + 1 == len(chunks) or chunks[k + 1][0] != pos
            if last:
                yield outputs, todo[pos]
                outputs = []
        self.close_pipes()

    def prepare(self, batches: list[PlanBatch]) -> None:
        """Build (in the background) the pipelines of the batches the next run() will get.

        Hides the per-epoch rebuild and the pipelines' ramp-up behind the current epoch.
        """
        if self._prepared is not None:
            self._prepared[1].cancel()
        if batches:
            self._prepared = (batches, self._pool.submit(self._build, self._chunks(batches)))

    def _take_prepared(self, batches: list[PlanBatch]) -> list[Any] | None:
        if self._prepared is None:
            return None
        ready, future = self._prepared
        self._prepared = None
        same = len(ready) == len(batches) and all(
            a.epoch == b.epoch and np.array_equal(a.requests, b.requests)
            for a, b in zip(ready, batches, strict=True)
        )
        if not same:
            future.cancel()
            return None
        return future.result()

    def close_pipes(self) -> None:
        self._pipes = []

    def close(self) -> None:
        self.close_pipes()
        if self._prepared is not None:
            self._prepared[1].cancel()
            self._prepared = None
        self._pool.shutdown(wait=True)
        self._tmp.cleanup()

    def _diagnose(self, error: RuntimeError, req: np.ndarray) -> LoaderError:
        text = str(error)
        for i in req["index"]:
            if str(self.paths[int(i)]) in text:
                rec = self.dataset.records[int(i)]
                return LoaderError(
                    f"{self.dataset.shard_path(int(i))}: sample {rec.key}: NVDEC could not "
                    f"decode its cached copy {self.paths[int(i)]} ({text.strip()[:300]})"
                )
        return LoaderError(f"NVDEC decoding failed ({text.strip()[:300]})")
