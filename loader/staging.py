"""The hand-over one batch ahead, on a stream of its own (LoaderConfig.handover_stream).

On the GPU the hand-over kernel (loader.handover) turns DALI's uint8 output into the batch the
step reads: ~0.2 ms a batch of 128 on an H200 for the NVDEC path's crop. Queued on the training
stream just before the step that reads it (handover_stream "step"), that is time the training
stream spends outside steps, ~0.34 % of an H200's 60 ms step (docs/BENCHMARKS.md, twelfth round).

With "side" or "rest", batch k+1 is taken from DALI and its kernel queued on a stream of its own
when the consumer asks for batch k, so it runs beside step k; the training stream waits for it by
an event before step k+1, and never idles for it. Before the kernel, the hand-over stream waits
for the steps already queued on the training stream: the batch's memory may have been freed by
one of them (the framework's allocator reuses memory by stream order), and DALI's buffers are held
(loader.bridge.Holder) by events on the hand-over stream. "side" is an ordinary stream, free to use
every SM; "rest" is one on the SMs the training's partition leaves to the loader
(loader.greenctx.SmPartition.rest_stream), where the kernel cannot take the step's SMs ("side"
where there is no partition).

This module is the order of things only (no framework, no CUDA): `one_ahead` stages each item as
it arrives and hands it out one item later, so order and coverage are the source's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
S = TypeVar("S")
U = TypeVar("U")

HANDOVER_STREAMS = ("step", "side", "rest")  # LoaderConfig.handover_stream


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
