"""GPU backend: NVDEC decoding through many concurrent `readers.video` pipelines over a file cache.

Why files and many pipelines (FINDINGS.md, docs/BENCHMARKS.md): DALI's in-memory GPU decoder
(`decoders.video(device="mixed")`) delivers ~100 clips/s on an H200, while the legacy file reader
`fn.readers.video(device="gpu")` with 16-32 pipelines keeps NVDEC busy at 4,500+ clips/s. So:

1. `stage_cache` (loader.videocache) copies every video of the subset out of its shard into a
   local directory, once, checking each one's sha256 against the manifest before it is renamed
   into place. File names carry the checksum (`<sha256[:16]>-<key>.<ext>`), so a re-extracted
   video never reuses a stale file, and a later run only checks that the file exists with the
   right size.
2. The clip plans of several consecutive epochs are cut into chunks of `cfg.gpu_batch` requests;
   chunk k goes to pipeline k % P, whose `file_list` holds one line `path id start start+T` per
   request, in plan order (loader.segment). The reader returns exactly that window (frame numbers,
   no shuffling), so the GPU gives the clip the plan asked for, like the CPU backend. Starting 24
   NVDEC pipelines takes seconds, so they serve a whole segment of epochs, and the next segment is
   built and set decoding in the background while the current one runs; the segment done with is
   shut down in the background too (below).
3. The pipelines hand the whole frames over (`loader.backend.Frames`, with the plan's windows) and
   the hand-over kernel crops, resizes and flips them as it normalises, which takes DALI's two
   resampling kernels a chunk off the GPU beside the training step (LoaderConfig.gpu_resize;
   docs/BENCHMARKS.md, twelfth round); or (`gpu_resize="dali"`, or where the kernel cannot
   run) crop windows and flips come from the plan through an external source in each pipeline,
   and the shared `loader.augment.augment` runs on the GPU frames.

A request whose frames are not one contiguous window (loop padding of a video shorter than T) is
not expressible as a file-list line: such videos are rejected up front, naming the key (extract
already refuses videos shorter than one clip).

Segment boundaries are where training feels this design, and the cause is Python's lock (the
GIL): DALI builds a pipeline (`Pipeline.build`) and frees one (its pybind11 destructor) holding it,
so the training thread cannot queue steps meanwhile; a free held it ~0.1 s, about one training
step, as if it waited for the GPU. On an H200
(docs/BENCHMARKS.md, seventh round; `ucf3d bench feed` probes the lock and counts steps per
second) a background build stopped training for up to 0.37 s at a time and a boundary's frees
~0.1 s per pipeline, so 60 s with two boundaries fed 0.841 against 0.891-0.903 with none. What
is done about it:
- the segment done with is shut down by a thread of its own, one pipeline at a time
  `gpu_pace_s` apart, so each stop is about one queued step (0.860; the longest device step
  fell from 950 to 221 ms);
- the next segment is built halfway through the current one, one pipeline at a time too; with
  `gpu_lazy_init` its readers open their files on their first run, in their own threads, not in
  build (0.863). It is not the default: one run of ten with it ended in CUDA_ERROR_ILLEGAL_ADDRESS
  inside DALI, which two repeats did not reproduce (the ninth round saw the same crash in two
  hybrid runs without it, so lazy init may not be the cause: docs/BENCHMARKS.md);
- above all, fewer boundaries: by default (`gpu_segment_clips=None`) a run whose last epoch is
  known is planned whole, one set of pipelines for all of it, where every pipeline keeping every
  file of its lists open (a demuxer each, ~92 KB: `DEMUXER_BYTES`, ~21 GB with 24 pipelines on
  UCF-101, estimated) fits in half the available host memory; else 50,000 clips a set.
`segment_report()` says what each build and boundary cost, and when (`ucf3d bench feed`).
"""

from __future__ import annotations

import gc
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from nvidia.dali import fn, pipeline_def, types

from .augment import augment, flip_folded, param_feed, param_inputs
from .backend import Frames, PlanBatch
from .config import LoaderConfig
from .handover import unavailable as handover_unavailable
from .hostmem import host_available_bytes, host_rss_gb
from .segment import Segment, file_lists
from .source import Dataset, LoaderError
from .videocache import default_cache_dir, stage_cache

log = logging.getLogger(__name__)

BACKGROUND_BUILD_THREADS = 4  # pipelines built at once for a segment built while another runs
SEGMENT_CLIPS = 50_000  # clips planned per set of pipelines where the whole run is not
WHOLE_RUN = 1 << 62  # clips of a plan that ends only with the run's last epoch
# host memory a readers.video pipeline keeps per file of its lists (an open demuxer; 90-92 KB
# measured through PyAV by bench/demux_memory.py): what a whole-run plan costs
DEMUXER_BYTES = 92_000
# FREEZE: a whole-run plan is ~10^5 Python objects (the benchmark footage's 9,260 epochs: 98,000
# in the process against 53,000 without), and every full collection of Python's cyclic GC scans
# them all holding the lock: 54 ms a pass on the 2-core dev box against 11 without the plan, 0
# once frozen (bench/segment_cost.py). So after a segment built in front (a run's first, or a
# rebuild) the process's objects are collected once and frozen (gc.freeze: left to reference
# counting, never scanned again).


class GpuBackend:
    """Backend protocol (loader.backend) on NVDEC: P concurrent readers.video pipelines.

    Creating NVDEC pipelines costs seconds, so they live across epochs: a segment's file lists
    hold the plans of enough consecutive epochs for `cfg.gpu_segment_clips` clips (`planner(e)`
    gives epoch e's batches), and the next segment is built and started in the background while
    the current one runs. A run() that does not continue the segment (another
    epoch, an abandoned epoch) rebuilds from the requested epoch.
    """

    def __init__(
        self,
        cfg: LoaderConfig,
        dataset: Dataset,
        planner: Callable[[int], list[PlanBatch]] | None = None,
    ) -> None:
        short = np.flatnonzero(dataset.n_frames < cfg.clip_len)
        if len(short):
            rec = dataset.records[int(short[0])]
            raise LoaderError(
                f"{dataset.shard_path(int(short[0]))}: sample {rec.key}: "
                f"{dataset.n_frames[int(short[0])]} frames, "
                f"fewer than one {cfg.clip_len}-frame clip; decode='gpu' needs whole windows "
                "(use decode='cpu', which loop-pads)"
            )
        self.cfg = cfg
        self.dataset = dataset
        self.planner = planner
        self.device_id = cfg.gpu_device()
        self.paths = stage_cache(dataset, cfg.cache_dir or default_cache_dir(), cfg.verify)
        self._tmp = tempfile.TemporaryDirectory(prefix="ucf3d-lists-")
        self._lists = 0  # file-list name counter (current and next segments coexist)
        self._segment: Segment | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ucf3d-segment")
        self._next: Future | None = None  # the following segment, being built
        self._retire = ThreadPoolExecutor(1, thread_name_prefix="ucf3d-retire")
        self.built: list[dict[str, Any]] = []  # per segment: epochs, clips, build_s, background
        self.segment_clips = cfg.gpu_segment_clips or self._auto_segment_clips()
        # who crops and resizes: "kernel" (the hand-over, from whole frames: Frames) or "dali"
        self.resize = "dali"
        if cfg.resizer() == "kernel":
            why_not = handover_unavailable()
            if why_not:
                log.warning("NVDEC: DALI crops and resizes the frames: %s", why_not)
            else:
                self.resize = "kernel"
        # (what, perf_counter at its start, seconds): builds, boundaries ("switch": the
        # consumer's time moving from one segment to the next), shut-downs (in the background)
        self.events: list[tuple[str, float, float]] = []

    def _auto_segment_clips(self) -> int:
        """gpu_segment_clips=None: the whole run in one plan, where its last epoch is known and
        every pipeline holding every file open, in every rank on this machine
        (`LoaderConfig.host_ranks()`), fits in half the available host memory; else
        SEGMENT_CLIPS. A whole-run plan never replaces its pipelines, and each replacement costs
        the training ~1-2 s on an H200 (docs/BENCHMARKS.md, seventh round)."""
        if self.cfg.gpu_last_epoch is None:
            return SEGMENT_CLIPS
        ranks = self.cfg.host_ranks()  # each holds as many open
        need = len(self.paths) * self.cfg.gpu_pipelines * DEMUXER_BYTES * ranks
        free = host_available_bytes()
        if free is None or need > free / 2:
            log.warning("NVDEC: plans of %d clips, not the whole run: %d pipelines x %d files "
                        "x %d ranks here would keep ~%.1f GB of host memory (%s available)",
                        SEGMENT_CLIPS, self.cfg.gpu_pipelines, len(self.paths), ranks, need / 1e9,
                        "?" if free is None else f"{free / 1e9:.1f} GB")  # fmt: skip
            return SEGMENT_CLIPS
        log.info("NVDEC: one plan for the whole run (~%.1f GB of host memory for open files)",
                 need / 1e9)  # fmt: skip
        return WHOLE_RUN

    # -- building --------------------------------------------------------------------------------
    def _chunks(self, batches: list[PlanBatch]) -> list[np.ndarray]:
        """Requests cut into chunks of at most gpu_batch, batch by batch, in plan order."""
        b = self.cfg.gpu_batch
        return [batch.requests[s : s + b] for batch in batches for s in range(0, len(batch), b)]

    def _plan(self, first_epoch: int, first: list[PlanBatch]) -> list[list[PlanBatch]]:
        """The epochs of a segment from first_epoch: `first`, then the next ones until it holds
        `segment_clips` clips or reaches `gpu_last_epoch`."""
        epochs = [first]
        clips = sum(len(b) for b in first)
        while (self.planner is not None and clips < self.segment_clips
               and not self.past_last(first_epoch + len(epochs))):  # fmt: skip
            more = self.planner(first_epoch + len(epochs))
            epochs.append(more)
            clips += sum(len(b) for b in more)
        return epochs

    def past_last(self, epoch: int) -> bool:
        """Whether `epoch` comes after the run's last (`gpu_last_epoch`): nothing is planned
        or built for it."""
        return self.cfg.gpu_last_epoch is not None and epoch > self.cfg.gpu_last_epoch

    def _segment_for(
        self, first_epoch: int, first: list[PlanBatch], background: bool = False
    ) -> Segment:
        """Plan epochs first_epoch, first_epoch + 1, ... into one segment and build it (in the
        background, where another segment is feeding training, as `_build` paces it)."""
        epochs = self._plan(first_epoch, first)
        clips = sum(len(b) for e in epochs for b in e)
        chunks = [self._chunks(e) for e in epochs]
        t0 = time.perf_counter()
        pipes, depth = self._build([c for e in chunks for c in e], background)
        took = time.perf_counter() - t0
        self.events.append(("build_background" if background else "build", t0, took))
        last = first_epoch + len(epochs) - 1
        self.built.append({"epochs": [first_epoch, last], "clips": clips,
                           "build_s": round(took, 2), "background": background,
                           "host_rss_gb": host_rss_gb()})  # fmt: skip
        log.info("NVDEC segment: epochs %d-%d, %d clips, %d pipelines, built in %.2f s%s",
                 first_epoch, last, clips, len(pipes), took,
                 " (background)" if background else "")  # fmt: skip
        if not background:  # before training's next step: the plan out of the GC's way (FREEZE)
            gc.collect()
            gc.freeze()
        return Segment(epochs, chunks, pipes, depth, self.cfg.gpu_batch, self.cfg.gpu_check_lag)

    def _build(self, chunks: list[np.ndarray], background: bool) -> tuple[list[Any], int]:
        """One pipeline per file list (chunk k -> pipeline k % P), each started decoding.

        DALI's build holds Python's lock throughout (and, without `gpu_lazy_init`, opens every
        file of the list meanwhile), so builds in several threads cannot overlap and each stops
        the training thread; in the background the pipelines are built one at a time,
        `gpu_pace_s` apart, to keep each stop short."""
        cfg = self.cfg
        self._lists += 1
        per_pipe, texts = file_lists(
            chunks, self.paths, cfg.gpu_pipelines, cfg.gpu_batch, cfg.clip_len
        )
        depth = min(cfg.prefetch, min(len(r) for r in per_pipe))
        pipes = []
        for p, (reqs, text) in enumerate(zip(per_pipe, texts, strict=True)):
            lst = Path(self._tmp.name) / f"list{self._lists}-pipe{p}.txt"
            lst.write_text(text)
            pipes.append(self._pipeline(lst, iter(reqs), seed=cfg.seed + p, depth=depth))
        if background and cfg.gpu_pace_s:
            for p, pipe in enumerate(pipes):
                if p:
                    time.sleep(cfg.gpu_pace_s)
                pipe.build()
        else:
            threads = BACKGROUND_BUILD_THREADS if background else len(pipes)
            with ThreadPoolExecutor(threads) as pool:
                for future in [pool.submit(pipe.build) for pipe in pipes]:
                    future.result()
        for pipe in pipes:
            pipe.schedule_run()  # starts decoding now: fills the prefetch queue
        return pipes, depth

    def _pipeline(
        self, file_list: Path, chunks: Iterator[np.ndarray], seed: int, depth: int
    ) -> Any:
        """One reader pipeline over `file_list`; crop windows fed from the same chunks."""
        cfg = self.cfg

        def params() -> tuple[list[np.ndarray], ...]:
            return param_feed(next(chunks))  # StopIteration past the last chunk

        @pipeline_def(
            batch_size=cfg.gpu_batch,
            num_threads=cfg.gpu_threads,
            device_id=self.device_id,
            prefetch_queue_depth=depth,
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
                lazy_init=cfg.gpu_lazy_init,
                name="video",
            )  # (T, H, W, 3) uint8 on the GPU
            if self.resize == "kernel":  # whole frames: the hand-over kernel crops them
                return frames, _ids
            roi = param_inputs(params)  # crop window, flip folded in
            return augment(frames, roi, cfg), _ids

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
        seg = self._current(todo)
        start = todo[0].epoch - seg.next + len(seg.epochs)  # after the segment's last epoch
        if (seg.next == len(seg.epochs) // 2 and self.planner is not None and self._next is None
                and not self.past_last(start)):  # fmt: skip
            # build the following segment halfway through this one, away from the boundary
            # (~1-1.3 s on an H200; a one-epoch segment starts it at once)
            self._next = self._pool.submit(self._segment_for, start, self.planner(start), True)
        chunks = seg.chunks[seg.next]
        seg.next += 1
        done = False
        try:
            outputs: list[Any] = []
            i = 0
            for batch in todo:
                for _ in range(0, len(batch), self.cfg.gpu_batch):
                    try:
                        clips = seg.take()
                    except LoaderError:
                        raise
                    except RuntimeError as e:
                        raise self._diagnose(e, chunks[i]) from e
                    outputs.append(clips)
                    i += 1
                if self.resize == "kernel":
                    yield Frames(outputs, flip_folded(batch.requests)), batch
                else:
                    yield outputs, batch
                outputs = []
            done = True
        finally:
            if not done and self._segment is seg:  # abandoned or failed mid-epoch: out of step
                self._segment = None
                self._retire.submit(self._shut, seg)  # freed off the consumer's thread

    def _current(self, batches: list[PlanBatch]) -> Segment:
        """The segment holding `batches` as its next epoch: current, prepared, or new. One done
        with is shut down by the retiring thread, off the consumer's."""
        old = self._segment
        if old is not None and old.matches(batches):
            return old
        t0 = time.perf_counter()
        if old is not None:
            old.check_all()  # done with: its last chunks' lines still count
            self._segment = None
            self._retire.submit(self._shut, old)
        try:
            if self._next is not None:
                seg = self._next.result()
                self._next = None
                if seg.matches(batches):
                    self._segment = seg
                    return seg
                self._retire.submit(self._shut, seg)  # planned for epochs not asked for
            log.debug("building NVDEC pipelines from epoch %d", batches[0].epoch)
            self._segment = self._segment_for(batches[0].epoch, batches)
            return self._segment
        finally:
            if old is not None:
                self.events.append(("switch", t0, time.perf_counter() - t0))

    def _shut(self, segment: Segment) -> None:
        t0 = time.perf_counter()
        self.events.append(("shutdown", t0, segment.shutdown(self.cfg.gpu_pace_s)))

    def segment_report(self, origin: float | None = None) -> dict[str, Any]:
        """What the NVDEC segments cost: each one built, the consumer's time at the boundaries,
        and the background time shutting down the segments done with. With `origin` (a
        perf_counter time), also `events`: [what, start, seconds] of each build, boundary
        (`switch`) and shut-down, start counted from origin."""
        clips = "whole run" if self.segment_clips == WHOLE_RUN else self.segment_clips
        events = list(self.events)  # the retiring thread may append meanwhile

        def total(kind: str) -> float:
            return round(sum(s for what, _, s in events if what == kind), 3)

        report = {"segment_clips": clips, "segments": list(self.built),
                  "switch_s": total("switch"), "retire_s": total("shutdown")}  # fmt: skip
        if origin is not None:
            report["events"] = [[what, round(t - origin, 2), round(s, 3)]
                                for what, t, s in events]  # fmt: skip
        return report

    def close(self) -> None:
        segment, self._segment = self._segment, None
        try:
            if segment is not None:
                segment.check_all()  # a fault in the last chunks is raised, after the clean-up
        finally:
            if self._next is not None:
                self._next.cancel()
                self._next = None
            self._pool.shutdown(wait=True)
            self._retire.shutdown(wait=True)  # segments done with: shut down before the files go
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
