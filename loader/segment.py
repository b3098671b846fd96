"""NVDEC plans as DALI file lists, and the set of pipelines that decodes them (loader.gpu).

`file_lists` deals a plan's chunks round-robin to P pipelines and writes each one's
`readers.video` file list, one line per requested clip in plan order; a `Segment` is the set of
pipelines reading such lists for several consecutive epochs (or a whole run), handed out chunk by
chunk, each chunk's lines checked against the plan.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from .backend import PlanBatch
from .source import LoaderError


def file_lists(
    chunks: list[np.ndarray], paths: list[Path], n_pipes: int, gpu_batch: int, clip_len: int
) -> tuple[list[list[np.ndarray]], list[str]]:
    """Deal chunks round-robin to pipelines: (per pipeline its padded chunks, its file_list text).

    Line j of a list is `path j start start+clip_len` (frame numbers, end exclusive) for the j-th
    request the pipeline decodes; a chunk shorter than gpu_batch repeats its last request so that
    every reader batch is whole (the repeats are dropped after decoding).
    """
    n_pipes = min(n_pipes, len(chunks))
    per_pipe: list[list[np.ndarray]] = [[] for _ in range(n_pipes)]
    for k, req in enumerate(chunks):
        if not (req["frames"] == req["start"][:, None] + np.arange(clip_len)).all():
            raise LoaderError("decode='gpu' needs contiguous windows (no loop padding)")
        if len(req) < gpu_batch:  # (concatenating structured arrays is slow: only when short)
            req = np.concatenate([req, np.repeat(req[-1:], gpu_batch - len(req))])
        per_pipe[k % n_pipes].append(req)
    names = [str(p) for p in paths]
    texts = []
    for reqs in per_pipe:
        flat = np.concatenate(reqs)  # plain ints: a whole run's lists are millions of lines
        pairs = zip(flat["index"].tolist(), flat["start"].tolist(), strict=True)
        texts.append(
            "".join(f"{names[i]} {j} {s} {s + clip_len}\n" for j, (i, s) in enumerate(pairs))
        )
    return per_pipe, texts


class Segment:
    """Pipelines whose file lists hold the chunks of several consecutive epochs, in order."""

    def __init__(
        self,
        epochs: list[list[PlanBatch]],
        chunks: list[list[np.ndarray]],
        pipes: list[Any],
        depth: int,
        batch: int,
        check_lag: int = 0,
    ) -> None:
        self.batch = batch  # reader batch (every chunk is padded to it)
        self.check_lag = check_lag  # chunks taken before a chunk's lines are checked
        self._unchecked: deque[tuple[int, int, Any]] = deque()  # (pipeline, first line, ids)
        self.epochs = epochs  # the planned batches of each epoch of the segment
        self.chunks = chunks  # per epoch: its chunks (requests), in plan order
        self.pipes = pipes
        n_pipes = len(pipes)
        total = sum(len(c) for c in chunks)
        self.total = [len(range(p, total, n_pipes)) for p in range(n_pipes)]
        self.scheduled = [min(depth, t) for t in self.total]  # queued when built
        self.next = 0  # index of the next epoch to hand out
        self.k = 0  # global index of the next chunk

    def matches(self, batches: list[PlanBatch]) -> bool:
        """Whether `batches` are exactly the next epoch this segment holds (requests compared)."""
        if self.next >= len(self.epochs):
            return False
        ready = self.epochs[self.next]
        return len(ready) == len(batches) and all(
            np.array_equal(a.requests, b.requests) for a, b in zip(ready, batches, strict=True)
        )

    def take(self) -> Any:
        """The next chunk's clips; keeps the queue full. Every chunk's file-list lines are checked
        against the plan, `check_lag` chunks later (0: now). Reading them copies them to the host,
        which waits for the chunk's GPU work; a few chunks later that work is long done."""
        p, n_pipes = self.k % len(self.pipes), len(self.pipes)
        clips, ids = self.pipes[p].outputs()
        self._unchecked.append((p, (self.k // n_pipes) * self.batch, ids))
        while len(self._unchecked) > self.check_lag:
            self._check(*self._unchecked.popleft())
        if self.scheduled[p] < self.total[p]:
            self.pipes[p].schedule_run()
            self.scheduled[p] += 1
        self.k += 1
        return clips

    def check_all(self) -> None:
        """Check the chunks taken and not yet checked (the segment is done with)."""
        while self._unchecked:
            self._check(*self._unchecked.popleft())

    def shutdown(self, pace_s: float = 0.0) -> float:
        """Stop the pipelines and free their decoders and buffers, here and now rather than in
        whichever thread drops the last reference, one at a time `pace_s` apart; the seconds it
        took. DALI stops a pipeline without Python's lock, but frees it holding it (a pybind11
        destructor), so the training thread stands still meanwhile: paced, each stop is short."""
        t0 = time.perf_counter()
        pipes, self.pipes = self.pipes, []
        while pipes:
            pipes.pop()._shutdown()  # what Pipeline.__del__ does (DALI 2.4): no public equivalent
            if pipes and pace_s:
                time.sleep(pace_s)
        return time.perf_counter() - t0

    def _check(self, p: int, line: int, ids: Any) -> None:
        ids = ids.as_cpu() if hasattr(ids, "as_cpu") else ids
        got = np.asarray(ids.as_array()).reshape(-1)
        if not np.array_equal(got, np.arange(line, line + self.batch)):
            raise LoaderError(
                f"NVDEC pipeline {p} returned file-list lines {got.tolist()} where lines "
                f"{line}..{line + self.batch - 1} were due: clips out of plan order"
            )
