"""The hand-over one batch ahead, on a stream of its own (LoaderConfig.handover_stream).

On the GPU the hand-over kernel (loader.handover) turns DALI's uint8 output into the batch the
step reads: ~0.19 ms a batch of 128 on an H200 for the NVDEC path's crop. On the training stream
just before the step that reads it (handover_stream "step", the default) that is time the
training stream spends outside steps: the 0.2 ms "between" of every fed line since the twelfth
round, ~0.34 % of a 60 ms step (docs/BENCHMARKS.md).

With "side", batch k+1 is taken from DALI and its kernel queued on a high-priority stream of its
own (HANDOVER_PRIORITY) when the consumer asks for batch k; the training stream waits for it by
an event before step k+1. The stream is in the training's SM partition where there is one
(loader.greenctx); DALI's buffers are held (loader.bridge.Holder) by events on it.

What the hand-over stream waits for (StreamOrder): the memory it writes may have been read by a
step (the framework's allocator reuses a stream's freed memory by that stream's order; a CUDA
graph's inputs are reused in turn). Until the seventeenth round it waited for every step queued
so far, i.e. for step k-1 when staging batch k+1: the kernel could start only when step k-1
ended, exactly when step k wanted the SMs, so it still ran between two steps (profiles of the
sixteenth and seventeenth rounds: at the default priority and at high priority alike). Now it
waits only for step k-2, whose end the training stream marked when batch k-1 was handed out, and
`one_ahead` keeps batch k-1 alive until batch k+1 is staged, so no memory a later step reads is
free for the kernel to write: batches k-1 and k are held, every batch before them was read by
step k-2 at the latest. A graphed step therefore needs three inputs in turn, not two. The first
batch of an epoch waits for everything queued (the batches of the epoch before were let go).

This module is the order of things only: `one_ahead` stages each item as it arrives and hands it
out one item later, so order and coverage are the source's; `StreamOrder` is written against the
streams and events that PyTorch and Paddle both have (`record`, `wait_event`, `wait_stream`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
S = TypeVar("S")
U = TypeVar("U")

HANDOVER_STREAMS = ("step", "side")  # LoaderConfig.handover_stream
HANDOVER_PRIORITY = -1  # CUDA's convention (lower is sooner): the hand-over stream's, "side"
GRAPH_INPUTS = 3  # a graphed step's inputs in turn when batches are staged: k+1 reuses k-2's


def one_ahead(items: Iterable[T], stage: Callable[[T], S], ready: Callable[[S], U]) -> Iterator[U]:
    """`ready(stage(item))` for each item, in order; each item is staged before the previous one
    is handed out (the last one alone at the end), and each item handed out is held here until
    the next one but one has been staged. Closing the iterator early closes `items`, and leaves
    at most one staged item unused."""
    pending: list[S] = []
    held: U | None = None  # handed out last: its memory must not be free while item +2 is staged
    source = iter(items)
    try:
        for item in source:
            pending.append(stage(item))
            if len(pending) > 1:
                held = ready(pending.pop(0))
                yield held
        while pending:
            held = ready(pending.pop(0))
            yield held
    finally:
        del held
        close = getattr(source, "close", None)
        if close is not None:
            close()


class StreamOrder:
    """The hand-over stream's order against the training stream (module doc): `staging` before
    a batch's hand-over is queued, `handing` when it is handed to the training stream, `restart`
    when an epoch starts. `event` makes an event (torch.cuda.Event, paddle.device.Event)."""

    def __init__(self, event: Callable[[], Any]) -> None:
        self._event = event
        self._mark: Any = None  # the training stream when the last batch was handed out

    def restart(self) -> None:
        """A new epoch: the batches of the one before are no longer held (`one_ahead`)."""
        self._mark = None

    def staging(self, hand: Any, training: Any) -> None:
        """Make `hand` wait for the step before last (for everything queued, first in an epoch)."""
        if self._mark is None:
            hand.wait_stream(training)
        else:
            hand.wait_event(self._mark)

    def handing(self, done: Any, training: Any) -> None:
        """Make `training` wait for a batch's hand-over (`done`, recorded on the hand-over stream
        after it), and mark where it stands: the end of the step before the one this batch is
        for."""
        training.wait_event(done)
        self._mark = self._event()
        self._mark.record(training)
