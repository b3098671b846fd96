"""CPU backend: one DALI pipeline decoding VP9 clips from shard bytes + the shared augmentation.

The Python side reads each request's encoded video from its shard (pread, in plan order) and hands
DALI a batch through one batched external source; DALI's prefetch queue keeps `cfg.prefetch`
batches in flight, so reading and feeding overlap decoding on `cfg.num_threads` threads.
`fn.decoders.video(frames=...)` takes the plan's exact frame indices per sample, loop padding
included. DALI decodes only VP9 on the CPU (FINDINGS.md); other codecs fail with a LoaderError.

The feed comes from a `planner` (epoch -> its PlanBatches, as ClipLoader.batches) and runs on past
the end of an epoch into the next ones, so the pipeline never drains between epochs: the first
batches of epoch e+1 decode while the consumer works on the last ones of epoch e. A pipeline that
ended and restarted at every epoch boundary made the consumer wait for its cold start each time:
on 216-clip epochs (the benchmark footage) that cost the hybrid backend a third of its rate beside
training (docs/BENCHMARKS.md). A run for any other epoch (skipped, repeated, abandoned) rebuilds.

With `device` (the hybrid backend's CPU part; CPU decoding for a model on the GPU, `clips_on`)
the decoded clips leave the pipeline on that GPU: DALI copies them from its pinned staging memory
on its own stream, while it decodes the next batch. Copied by the consumer instead, from DALI's
pageable CPU output, the copy would wait for every training step queued on the consumer's stream
and hold the host there, once per batch.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from nvidia.dali import fn, pipeline_def, types

from .augment import augment, param_feed
from .backend import PlanBatch
from .config import LoaderConfig
from .source import Dataset, LoaderError, ShardReader
from .webm import ClusterIndex, index_webm, trim

log = logging.getLogger(__name__)

_SOURCE_DTYPES = [types.UINT8, types.INT32, types.FLOAT, types.FLOAT]  # video, frames, roi
MAX_EMPTY_EPOCHS = 4  # the feed stops looking ahead after this many epochs with nothing to decode


def _same(a: PlanBatch, b: PlanBatch) -> bool:
    return a.epoch == b.epoch and np.array_equal(a.requests, b.requests)


class CpuBackend:
    """Backend protocol (loader.backend) on the CPU: DALI decoders.video(device="cpu")."""

    def __init__(
        self,
        cfg: LoaderConfig,
        dataset: Dataset,
        planner: Callable[[int], list[PlanBatch]],
        device: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.dataset = dataset
        self.device = device  # GPU the clips are handed over on (None: host memory)
        self.planner = planner  # epoch -> batches: the feed continues into the next epochs
        self.reader = ShardReader(dataset, verify=cfg.verify)
        self._feed: Iterator[PlanBatch] = iter(())  # what the source hands DALI, in order
        self._ahead: deque[PlanBatch] = deque()  # taken from the feed to look at, not yet fed
        self._pending: deque[PlanBatch] = deque()  # fed to DALI, clips not yet handed out
        self._pipe: Any = None
        self._probe: Any = None
        self._clean = False  # the pipeline owes nothing to an unfinished run()
        self._webm: dict[int, ClusterIndex | None] = {}  # per video, built on first use

    # -- DALI side -----------------------------------------------------------------------------
    def _build(self) -> None:
        cfg = self.cfg

        @pipeline_def(
            batch_size=cfg.batch_size,
            num_threads=cfg.num_threads,
            device_id=self.device,
            prefetch_queue_depth=cfg.prefetch,
        )
        def graph():  # noqa: ANN202 - DALI graph definition
            enc, frames, roi_start, roi_end = fn.external_source(
                source=self._next, num_outputs=4, batch=True, dtype=_SOURCE_DTYPES
            )
            # build_index=False: no full-file frame index per sample; seeking uses the WebM cues
            # (frame-exact: tests/test_loader.py reads frame numbers drawn in the pixels), ~10 %
            # faster on short UCF videos
            video = fn.decoders.video(enc, device="cpu", frames=frames, build_index=False)
            clips = augment(video, (roi_start, roi_end), cfg)  # (3, T, S, S) float / (T, S, S, 3)
            return clips if self.device is None else clips.gpu()

        self._pipe = graph()
        self._pipe.build()

    def _next(self) -> tuple[list[np.ndarray], ...]:
        """Batch source: the next PlanBatch's encoded videos, frame indices and crop params."""
        batch = self._ahead.popleft() if self._ahead else next(self._feed)  # StopIteration: end
        req = batch.requests
        encoded, frames = [], []
        for i, fr in zip(req["index"].tolist(), req["frames"], strict=True):
            data, fr = self._clip_stream(i, np.asarray(fr, np.int32))
            encoded.append(data)
            frames.append(fr)
        self._pending.append(batch)
        return (encoded, frames, *param_feed(req))

    def _clip_stream(self, i: int, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The bytes to decode for one request and the frame indices within them."""
        data = self.reader.read(i)
        contiguous = frames[-1] - frames[0] == len(frames) - 1  # not wrapped by loop padding
        if not (self.cfg.trim and contiguous and self.dataset.records[i].ext == "webm"):
            return data, frames
        if i not in self._webm:  # trust the cluster walk only if it counts the manifest's frames
            idx = index_webm(data.tobytes())
            ok = idx is not None and idx.n_frames == self.dataset.records[i].n_frames
            self._webm[i] = idx if ok else None
        idx = self._webm[i]
        cut = trim(data, idx, int(frames[0]), int(frames[-1])) if idx is not None else None
        if cut is None:
            return data, frames
        return cut[0], frames - np.int32(cut[1])

    # -- Backend protocol -------------------------------------------------------------------------
    def run(self, batches: Iterator[PlanBatch]) -> Iterator[tuple[Any, PlanBatch]]:
        """Yield (clips, batch) for each batch, in order (loader.augment's layout).

        The clips are a TensorListCPU, or a TensorListGPU on `device` when one was given.
        """
        todo = list(batches)
        if not todo:
            return
        if not self._continues(todo[0]):
            self._restart(todo)
        self._clean = False
        for expected in todo:
            try:
                (clips,) = self._pipe.run()
            except StopIteration:
                raise LoaderError("the CPU pipeline's feed ended before the epoch did") from None
            except LoaderError:
                raise
            except RuntimeError as e:
                raise self._diagnose(e) from e
            fed = self._pending.popleft()
            if not _same(fed, expected):
                raise LoaderError(
                    f"CPU pipeline returned batch {fed.number} of epoch {fed.epoch} where batch "
                    f"{expected.number} of epoch {expected.epoch} was due: clips out of plan order"
                )
            yield clips, expected
        self._clean = True

    def _continues(self, first: PlanBatch) -> bool:
        """Whether the running feed's next batch is `first` (then the pipeline carries on)."""
        if self._pipe is None or not self._clean:
            return False
        if not self._pending and not self._ahead:
            nxt = next(self._feed, None)
            if nxt is None:
                return False
            self._ahead.append(nxt)
        return _same(self._pending[0] if self._pending else self._ahead[0], first)

    def _restart(self, todo: list[PlanBatch]) -> None:
        """Feed `todo` and the epochs after it from a new pipeline (the old one holds prefetched
        batches of another plan, or of an abandoned epoch)."""
        self._feed = self._stream(todo)
        self._ahead.clear()
        self._pending.clear()
        self._pipe = None
        self._build()

    def _stream(self, todo: list[PlanBatch]) -> Iterator[PlanBatch]:
        yield from todo
        epoch, empty = todo[0].epoch + 1, 0
        while empty < MAX_EMPTY_EPOCHS:
            batches = self.planner(epoch)
            epoch, empty = epoch + 1, 0 if batches else empty + 1
            yield from batches

    def close(self) -> None:
        self._pipe = self._probe = None
        self.reader.close()

    # -- errors -----------------------------------------------------------------------------------
    def _diagnose(self, error: RuntimeError) -> LoaderError:
        """Find which in-flight sample DALI could not decode and name its shard and key."""
        reason = str(error).strip().splitlines()[0][:300] if str(error).strip() else repr(error)
        for batch in list(self._pending):
            for req, key in zip(batch.requests, batch.keys, strict=True):
                problem = self._probe_one(req)
                if problem is not None:
                    path = self.dataset.shard_path(int(req["index"]))
                    return LoaderError(
                        f"{path}: sample {key}: cannot decode frames "
                        f"{req['frames'].tolist()} ({problem})"
                    )
        return LoaderError(f"decoding failed in an in-flight batch ({reason})")

    def _probe_one(self, req: np.ndarray) -> str | None:
        """Decode one request alone; the error text, or None when it decodes."""
        if self._probe is None:

            @pipeline_def(
                batch_size=1,
                num_threads=1,
                device_id=None,
                exec_pipelined=False,
                exec_async=False,
                prefetch_queue_depth=1,
            )
            def probe():  # noqa: ANN202
                enc = fn.external_source(name="enc", dtype=types.UINT8, ndim=1)
                frames = fn.external_source(name="frames", dtype=types.INT32, ndim=1)
                return fn.decoders.video(enc, device="cpu", frames=frames)

            self._probe = probe()
            self._probe.build()
        try:
            data = self.reader.read(int(req["index"]))
            self._probe.run(enc=[data], frames=[np.asarray(req["frames"], np.int32)])
        except (RuntimeError, LoaderError) as e:
            return str(e).strip().splitlines()[0][:300] if str(e).strip() else repr(e)
        return None
