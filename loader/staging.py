"""The hand-over one batch ahead, on a stream of its own (LoaderConfig.handover_stream).

On the GPU the hand-over kernel (loader.handover) turns DALI's uint8 output into the batch the
step reads: ~0.19 ms a batch of 128 on an H200 for the NVDEC path's crop. On the training stream
just before the step that reads it (handover_stream "step", the default) that is time the
training stream spends outside steps: the 0.2 ms "between" of every fed line since the twelfth
round, ~0.34 % of a 60 ms step (docs/BENCHMARKS.md).

With "side", batch k+1 is taken from DALI and its kernel queued on a stream of its own when the
consumer asks for batch k; the training stream waits for it by an event before step k+1. Before
the kernel, the hand-over stream waits for the steps already queued on the training stream: the
batch's memory may have been freed by one of them (the framework's allocator reuses memory by
stream order), and DALI's buffers are held (loader.bridge.Holder) by events on the hand-over
stream. The stream is in the training's SM partition where there is one (loader.greenctx).

Measured on an H200 (docs/BENCHMARKS.md, "Sixteenth round"), at the default priority it bought
nothing: the training step's kernels kept every SM of the partition busy and the hand-over kernel
never got one until the step had ended, so it still ran between two steps, and the training
waited for it there (a profile shows the four kernels filling each 0.2 ms gap); on the 2 SMs the
partition leaves to the loader it was starved by DALI's kernels (0.82 fed). So the stream is now
made at high priority (HANDOVER_PRIORITY), so that its blocks go before the step's waiting ones:
not measured yet, and the default stays "step".

This module is the order of things only (no framework, no CUDA): `one_ahead` stages each item as
it arrives and hands it out one item later, so order and coverage are the source's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
S = TypeVar("S")
U = TypeVar("U")

HANDOVER_STREAMS = ("step", "side")  # LoaderConfig.handover_stream
HANDOVER_PRIORITY = -1  # CUDA's convention (lower is sooner): the hand-over stream's, "side"


def one_ahead(items: Iterable[T], stage: Callable[[T], S], ready: Callable[[S], U]) -> Iterator[U]:
    """`ready(stage(item))` for each item, in order; each item is staged before the previous one
    is handed out (the last one alone at the end). Closing the iterator early closes `items`, and
    leaves at most one staged item unused."""
    pending: list[S] = []
    source = iter(items)
    try:
        for item in source:
            pending.append(stage(item))
            if len(pending) > 1:
                yield ready(pending.pop(0))
        while pending:
            yield ready(pending.pop(0))
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()
