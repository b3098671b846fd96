"""Hybrid backend: NVDEC decodes the head of every batch, CPU threads decode its tail.

Why: a GPU with little decode hardware (a V100 has one NVDEC engine) can leave NVDEC, not the
host's cores, as the scarce part, and the CPU backend decodes the same clip plan to the same
pixels. So each PlanBatch is cut in two — its first clips for loader.gpu, its last `share` of
them for loader.cpu — and the two outputs are handed over as one list, GPU chunks first, so the
batch comes out in plan order (loader.bridge concatenates on the GPU). The CPU pipeline copies
its part to the GPU itself, on DALI's stream (loader.cpu): a copy made by the consumer from
pageable memory would hold the host until the training steps queued before it had run.

The share of an epoch is fixed when that epoch is first planned (the NVDEC pipelines hold
several epochs' file lists ahead: loader.gpu), and recorded, so a batch is always cut the same
way. With `cpu_share=None` the share adapts, in whole NVDEC chunks (`gpu_batch` clips: the cut
falls on a chunk boundary, so a smaller step would not change it). It starts at one chunk (1/8 of
a 128-clip batch) and moves at most one chunk each time new epochs are planned, judged on the
waits of the epochs run since the last plan: the consumer waits on the NVDEC part first, then
on the CPU part. Beside training the NVDEC wait never falls to zero (its GPU work queues behind
the steps, whatever the share), so the CPU path is judged against it: it holds the consumer
longer than 3/4 of the NVDEC wait -> one chunk less, and the share never climbs back to where
it was (with no CPU part there is no CPU wait, so without that bound a share too large for the
CPU would be tried again every other plan). One chunk more only when the CPU part never held
the consumer (under 1 % of the time) while the NVDEC part did: a CPU wait that is merely small
against the NVDEC wait says nothing of the CPU's room for more (on an H200 a 1/8 share whose CPU
wait was under 1/4 of the NVDEC wait was stepped up to 1/4, which its 6 threads could not keep:
docs/BENCHMARKS.md, sixth round). Otherwise, or when the consumer hardly waited at all (under
1 % of the time), the share stays. One step per plan, not per epoch run: the epochs run between
two plans were all cut with shares chosen before, so stepping after each of them would push the
share to a bound before the first change could show (on the benchmark footage, hundreds of
1-batch epochs share a plan).

Measured on an H200 with 16 cores (docs/BENCHMARKS.md, fourth to sixth rounds), 1/8 of every
batch on 6 CPU threads fed the training step at 0.905-0.938 of its unfed speed at short side 128
(five runs), against 0.90-0.92 for NVDEC alone; at short side 240 the CPU part could not keep up
(0.65-0.76 against 0.79-0.83 for NVDEC alone). The adapting was run there with short plans
(`gpu_segment_clips`), so that it could move within a benchmark run (sixth round): under the rule
before this one it climbed from 1/8 to 1/4 at 128 and fell to 0 at 240; under this one it held
1/8 at 128 (0.774, like the fixed 1/8 beside it: both windows held a plan boundary, which cost
more than any share). With whole-run plans and 32 hardware work queues (loader.workqueues; eighth
round) the fixed 1/8 on 6 threads fed 0.947-0.948 and 1/4 on 10 threads 0.955, against 0.946 for
NVDEC alone. It is an option (`decode="hybrid"`), not the default. On the H200 it ended 6 runs
of 74 with CUDA_ERROR_ILLEGAL_ADDRESS inside DALI, some 13-29 s after its pipelines were built
(docs/BENCHMARKS.md, "Ninth round" and "Twelfth round": two of that round's three); no NVDEC-only
run has, in 154; the cause is not known. Its NVDEC part crops with DALI's fn.resize
(LoaderConfig.resizer(): the hand-over kernel crops only for decode="gpu"), so the hybrid does
not have the twelfth round's gain either.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from .backend import PlanBatch
from .config import LoaderConfig
from .cpu import CpuBackend
from .gpu import GpuBackend
from .source import Dataset

log = logging.getLogger(__name__)

# cpu_share=None: the CPU path's wait against the NVDEC path's, since the last plan (module doc)
LESS_ABOVE = 0.75
IDLE = 0.01  # a wait under this share of the time: that path (or both: the loader) did not limit


def gpu_clips(n: int, share: float, gpu_batch: int) -> int:
    """Of a batch of n clips, how many NVDEC decodes with a CPU share `share`: whole chunks
    (nearest to n x (1 - share), halves to even), and at least one chunk's worth."""
    n_gpu = round(n * (1 - share) / gpu_batch) * gpu_batch
    return min(n, max(n_gpu, min(n, gpu_batch)))


def split(batch: PlanBatch, share: float, gpu_batch: int) -> tuple[PlanBatch, PlanBatch | None]:
    """(GPU head, CPU tail or None) of a batch; the head is whole NVDEC chunks where it can be."""
    n = len(batch)
    n_gpu = gpu_clips(n, share, gpu_batch)
    head = _part(batch, 0, n_gpu)
    return head, (_part(batch, n_gpu, n) if n_gpu < n else None)


def _part(batch: PlanBatch, start: int, stop: int) -> PlanBatch:
    return dataclasses.replace(
        batch,
        requests=batch.requests[start:stop],
        keys=batch.keys[start:stop],
        labels=batch.labels[start:stop],
    )


class HybridBackend:
    """Backend protocol (loader.backend) on NVDEC and CPU threads at once (module docstring)."""

    def __init__(
        self,
        cfg: LoaderConfig,
        dataset: Dataset,
        planner: Callable[[int], list[PlanBatch]],
    ) -> None:
        self.cfg = cfg
        self.chunk = min(1.0, cfg.gpu_batch / cfg.batch_size)  # the share's step: one NVDEC chunk
        self.max_share = max(0.0, 1.0 - self.chunk)  # at least one chunk stays on NVDEC (split())
        self.share = min(self.chunk, self.max_share) if cfg.cpu_share is None else cfg.cpu_share
        cut = 1 - gpu_clips(cfg.batch_size, self.share, cfg.gpu_batch) / cfg.batch_size
        if cfg.cpu_share is not None and abs(cut - self.share) > 1e-9:
            log.warning("hybrid: a CPU share of %g is cut as %g: NVDEC takes whole chunks of %d "
                        "clips of every batch of %d", self.share, cut, cfg.gpu_batch,
                        cfg.batch_size)  # fmt: skip
        self.share = cut  # the share full batches are cut with (what `shares` reports)
        self.shares: dict[int, float] = {}  # epoch -> the share its batches are cut with
        self.waited = {"gpu": 0.0, "cpu": 0.0}  # seconds the consumer waited on each path, in all
        # the same over whole epochs since the last plan, and the time those epochs took
        self._since = {"gpu": 0.0, "cpu": 0.0, "wall": 0.0}
        self.gpu = GpuBackend(cfg, dataset, planner=lambda e: self._heads(planner(e)))
        self.cpu = CpuBackend(  # its clips on the GPU; its feed runs on into the next epochs
            cfg, dataset, lambda e: self._tails(planner(e)), device=self.gpu.device_id
        )

    def _share_of(self, epoch: int) -> float:
        """The share `epoch` is cut with, fixed when it is first planned."""
        if epoch not in self.shares:
            self._adapt()
            self.shares[epoch] = self.share
        return self.shares[epoch]

    def _parts(self, batches: list[PlanBatch]) -> list[tuple[PlanBatch, PlanBatch | None]]:
        """(GPU head, CPU tail or None) of each of an epoch's batches, cut with its share."""
        share = self._share_of(batches[0].epoch) if batches else self.share
        return [split(b, share, self.cfg.gpu_batch) for b in batches]

    def _heads(self, batches: list[PlanBatch]) -> list[PlanBatch]:
        return [head for head, _ in self._parts(batches)]

    def _tails(self, batches: list[PlanBatch]) -> list[PlanBatch]:
        """The CPU parts of an epoch's batches (those that have one), as run() hands them over."""
        return [tail for _, tail in self._parts(batches) if tail is not None]

    def run(self, batches: Iterator[PlanBatch]) -> Iterator[tuple[Any, PlanBatch]]:
        """Yield ([GPU chunks..., CPU part], batch) per batch, in plan order."""
        todo = list(batches)
        if not todo:
            return
        parts = self._parts(todo)
        gpu = self.gpu.run(iter([head for head, _ in parts]))
        cpu = self.cpu.run(iter([tail for _, tail in parts if tail is not None]))
        wait_gpu = wait_cpu = 0.0
        start = time.perf_counter()
        try:
            for batch, (_, tail) in zip(todo, parts, strict=True):
                t0 = time.perf_counter()
                chunks, _ = next(gpu)
                t1 = time.perf_counter()
                outputs = list(chunks)
                if tail is not None:
                    cpu_clips, _ = next(cpu)
                    outputs.append(cpu_clips)
                wait_gpu, wait_cpu = wait_gpu + t1 - t0, wait_cpu + time.perf_counter() - t1
                yield outputs, batch
            for rest in (gpu, cpu):  # both ends must finish their epoch cleanly
                for _ in rest:
                    raise AssertionError("a backend yielded more batches than it was given")
        finally:
            gpu.close()
            cpu.close()
            self.waited["gpu"] += wait_gpu
            self.waited["cpu"] += wait_cpu
        # a whole epoch: evidence for the next plan
        self._record(wait_gpu, wait_cpu, time.perf_counter() - start)

    def _record(self, wait_gpu: float, wait_cpu: float, wall: float) -> None:
        self._since["gpu"] += wait_gpu
        self._since["cpu"] += wait_cpu
        self._since["wall"] += wall

    def _adapt(self) -> None:
        """cpu_share=None: at most one chunk of the share moved, on the waits since the last plan
        (module docstring); called as a new epoch is planned."""
        gpu, cpu, wall = self._since["gpu"], self._since["cpu"], self._since["wall"]
        self._since = {"gpu": 0.0, "cpu": 0.0, "wall": 0.0}
        if self.cfg.cpu_share is not None or gpu + cpu <= IDLE * wall:
            return
        if cpu > LESS_ABOVE * gpu:  # too much for the CPU: never again this much
            self.share = self.max_share = max(0.0, self.share - self.chunk)
        elif cpu <= IDLE * wall < gpu:  # only NVDEC held the consumer
            self.share = min(self.max_share, self.share + self.chunk)
        else:
            return
        log.debug("hybrid: waited NVDEC %.2f s, CPU %.2f s in %.1f s since the last plan; "
                  "share now %.3f", gpu, cpu, wall, self.share)  # fmt: skip

    def close(self) -> None:
        self.gpu.close()
        self.cpu.close()
