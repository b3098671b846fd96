"""DALI loaders: clips from shards (CPU decode) or a local cache (GPU NVDEC) into Paddle tensors."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .ahead import ahead
from .backend import Backend, PlanBatch, make_batches
from .bridge import Holder, labels_to_paddle, to_paddle
from .config import LoaderConfig
from .nice import renice_others
from .sampling import epoch_plan
from .source import Dataset, LoaderError, load_dataset
from .staging import StreamOrder, handover_place, one_ahead

if TYPE_CHECKING:  # paddle is imported when clips are handed over (the bridge), not before
    import paddle

__all__ = ["Batch", "ClipLoader", "LoaderConfig", "LoaderError"]

log = logging.getLogger(__name__)

RENICE_EVERY = 8  # batches between two looks for new loader threads (cfg.loader_nice)


@dataclass(frozen=True)
class Batch:
    """One batch: clips (N, 3, T, H, W) in cfg.dtype, int64 labels (N,), each clip's video key."""

    clips: paddle.Tensor  # (N, C, T, H, W), normalised, cfg.dtype
    labels: paddle.Tensor  # (N,) int64
    keys: list[str]
    clip_ids: np.ndarray  # (N,) clip number within its video (eval), 0 in train


def _paddle_event() -> Any:
    import paddle

    return paddle.device.Event()


class ClipLoader:
    """Clips of one split subset for this rank: `for batch in loader.epoch(e): ...`."""

    def __init__(self, cfg: LoaderConfig) -> None:
        self.cfg = cfg
        self.rank, self.world_size = cfg.dist()
        self.dataset: Dataset = load_dataset(cfg)
        self.classes: list[str] = self.dataset.classes
        self._backend: Backend | None = None
        self._holder = Holder()  # GPU outputs stay alive until the consumer is done with them
        self._hand: Any = None  # the hand-over stream (cfg.handover_stream "side", "rest")
        self._order = StreamOrder(_paddle_event)  # what it waits for, across epochs
        self._len = math.ceil(len(self.plan(0)) / cfg.batch_size)

    def plan(self, epoch: int) -> np.ndarray:
        """This rank's clip requests for `epoch` (loader.sampling.request_dtype rows), in order."""
        ds = self.dataset
        return epoch_plan(
            self.cfg, ds.n_frames, ds.height, ds.width, epoch, self.rank, self.world_size
        )

    def batches(self, epoch: int) -> list[PlanBatch]:
        return make_batches(self.dataset, self.plan(epoch), self.cfg.batch_size, epoch)

    def __len__(self) -> int:
        """Batches per epoch on this rank (the last may be partial)."""
        return self._len

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            if self.cfg.decode == "cpu":
                from .cpu import CpuBackend

                on_gpu = self.cfg.clips_device() == "gpu"
                device = self.cfg.gpu_device() if on_gpu else None
                self._backend = CpuBackend(self.cfg, self.dataset, self.batches, device)
            elif self.cfg.decode == "gpu":
                from .gpu import GpuBackend  # NVDEC backend (written against loader.backend)

                self._backend = GpuBackend(self.cfg, self.dataset, planner=self.batches)
            else:
                from .hybrid import HybridBackend  # NVDEC + CPU threads, each a share of a batch

                self._backend = HybridBackend(self.cfg, self.dataset, planner=self.batches)
        return self._backend

    def raw_epoch(self, epoch: int) -> Iterator[tuple[Any, PlanBatch]]:
        """The backend's (DALI output, PlanBatch) pairs of `epoch`, before any Paddle hand-over.

        With cfg.thread_ahead they are taken in a loader thread, that many batches ahead. With
        cfg.loader_nice the process's other threads are reniced every few batches (loader.nice:
        DALI starts threads as it builds pipelines), so the caller's thread keeps its core.
        """
        pairs = self.backend.run(iter(self.batches(epoch)))
        if self.cfg.thread_ahead:
            pairs = ahead(pairs, self.cfg.thread_ahead, f"ucf3d-loader-epoch{epoch}")
        try:
            for i, pair in enumerate(pairs):
                if self.cfg.loader_nice and i % RENICE_EVERY == 0:
                    renice_others(self.cfg.loader_nice)
                yield pair
        finally:
            pairs.close()  # an abandoned epoch reaches the backend now, as `yield from` did

    def raw_epochs(self, epochs: Iterable[int]) -> Iterator[tuple[Any, PlanBatch]]:
        """raw_epoch of each of `epochs`, one after the other; closing this closes the epoch
        under way (and so reaches the backend), as closing raw_epoch does."""
        for epoch in epochs:
            yield from self.raw_epoch(epoch)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """Batches of `epoch` in plan order; clips reach Paddle zero-copy through DLPack.

        With cfg.handover_stream "side" or "rest" (GPU, the hand-over kernel) each batch is
        handed over one batch ahead on a stream of its own (loader.staging)."""
        return self.epochs([epoch])

    def epochs(self, epochs: Iterable[int]) -> Iterator[Batch]:
        """The batches of `epochs`, one after the other, as `epoch` gives each; handed over
        ahead ("side", "rest") across their boundaries too, which matters where an epoch is a
        batch or two (the benchmark footage's: one batch of 128)."""
        if self.cfg.stages_handover():
            yield from one_ahead(self.raw_epochs(epochs), self._stage, self._ready)
            return
        for clips, batch in self.raw_epochs(epochs):
            tensor = to_paddle(clips, len(batch), self.cfg)
            self._holder.hold(clips, on_gpu=tensor.place.is_gpu_place())
            yield self._batch(tensor, batch)

    @staticmethod
    def _batch(tensor: paddle.Tensor, batch: PlanBatch) -> Batch:
        on_gpu = tensor.place.is_gpu_place()
        labels = labels_to_paddle(batch.labels, pinned=on_gpu)
        return Batch(tensor, labels, batch.keys, batch.requests["clip"].copy())

    def _stage(self, pair: tuple[Any, PlanBatch]) -> tuple[Batch, Any]:
        """Queue the batch's hand-over (clips and labels) on the hand-over stream, after the
        step before last on the current (training) stream, whose memory it may write
        (loader.staging)."""
        import paddle

        clips, batch = pair
        hand = self._handover_stream()
        self._order.staging(hand, paddle.device.current_stream())
        with paddle.device.stream_guard(hand):
            staged = self._batch(to_paddle(clips, len(batch), self.cfg), batch)
            self._holder.hold(clips, on_gpu=True)  # its event: on the hand-over stream
            done = paddle.device.Event()
            done.record(hand)
        return staged, done

    def _ready(self, staged: tuple[Batch, Any]) -> Batch:
        import paddle

        batch, done = staged
        self._order.handing(done, paddle.device.current_stream(), batch)
        return batch

    def _handover_stream(self) -> Any:
        """The stream batches are handed over on ahead (loader.staging): a high-priority one in
        the green context of the training's SM partition where it runs on one (loader.greenctx),
        or ("rest") a stream on the SMs that partition leaves to the loader."""
        if self._hand is None:
            import paddle

            from .greenctx import PADDLE_HIGH, PADDLE_NORMAL, partition_in_use

            part = partition_in_use(self.cfg.gpu_device())
            place = handover_place(self.cfg.handover_stream, part is not None)
            if part is None:
                self._hand = paddle.device.Stream(priority=PADDLE_HIGH)  # HANDOVER_PRIORITY
            else:  # REST_PRIORITY or HANDOVER_PRIORITY, in Paddle's terms
                priority = PADDLE_NORMAL if place == "rest" else PADDLE_HIGH
                with part.current(rest=place == "rest"):
                    self._hand = paddle.device.Stream(priority=priority)
        return self._hand

    def close(self) -> None:
        if self._hand is not None:
            self._hand.synchronize()  # a batch staged but never taken may still be in its kernel
        self._order = StreamOrder(_paddle_event)  # lets go of the batch it held
        self._holder.release()
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def __enter__(self) -> ClipLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
