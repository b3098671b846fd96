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

With "rest" the stream is in a green context of the SMs the training's partition leaves to the
loader (loader.greenctx.SmPartition.rest_stream): the kernel takes none of the step's SMs. There
it takes ~11-12 ms a batch of 128 beside DALI's conversion kernels (sixteenth round, when it was not
yet staged ahead: 0.820 fed, 11.3 ms between steps), which one batch ahead is time it has: it may
start when the step before the one handed out last has ended, and must be done before the step
after next. Without a partition there are no such SMs: "rest" is then "side" (and says so).

Measured staged ahead (eighteenth round, H200, the PyTorch stand-in): with "rest" the training
stream never waits between steps (0.00 ms against 0.21); the graphed step gains that (0.972
twice against 0.968), the eager one does not (0.961 against 0.960): while the kernel holds the
loader's SMs, DALI's conversion kernels run on the step's and the eager step takes 0.15-0.27 ms
longer. At short side 240, where the loader is the limit, "rest" lost 0.003. Hence "step" stays
the default.

What the hand-over stream waits for (StreamOrder): the memory it writes may have been read by a
step (the framework's allocator reuses a stream's freed memory by that stream's order; a CUDA
graph's inputs are reused in turn). It waits for the end of the step before the last batch
handed out, which the training stream marked when that batch was handed out, and StreamOrder
holds that batch until the next one is handed out: the batch handed out last and the one staged
are held, every batch before them was read by the steps before, so no memory a step still to
finish reads is free for the kernel to write. A graphed step writes into the one of its three
inputs (GRAPH_INPUTS) that neither the batch handed out last nor the one staged is in
(InputSlots). The order outlives an epoch, and `ClipLoader.epochs` stages across the epochs it
runs back to back.

In the sixteenth and seventeenth rounds' lines neither held, and the kernel never ran ahead
(docs/BENCHMARKS.md): it waited for every step queued (step k-1 when staging batch k+1), so it
could start only when step k wanted the SMs; and staging was per epoch, while the benchmark
footage's epochs are one batch each (216 clips, the partial batch dropped), so nothing was ever
staged ahead there: every "side" line of the sixteenth and seventeenth rounds queued the kernel
when its batch was asked for, after the step before it, and it ran between the two (profiles:
launched 5-22 ms ahead, started when that step ended, at the default priority and at high
priority alike).

This module is the order of things only: `one_ahead` stages each item as it arrives and hands it
out one item later, so order and coverage are the source's; `StreamOrder` is written against the
streams and events that PyTorch and Paddle both have (`record`, `wait_event`, `wait_stream`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
S = TypeVar("S")
U = TypeVar("U")

log = logging.getLogger(__name__)

HANDOVER_STREAMS = ("step", "side", "rest")  # LoaderConfig.handover_stream
HANDOVER_PRIORITY = -1  # CUDA's convention (lower is sooner): the hand-over stream's, "side"
# "rest": the default priority, DALI's own: at high priority the kernel's blocks would go before
# DALI's conversions on the loader's SMs; at this one they still fill those SMs while it runs, and
# DALI's conversions run on the step's meanwhile (eighteenth round's profile)
REST_PRIORITY = 0
NO_REST = ('handover_stream "rest": the training has no SM partition (loader_sms 0), so no SMs '
           'are left to the loader; handing over on a "side" stream instead')
GRAPH_INPUTS = 3  # a graphed step's inputs when batches are staged: held, staged, one to write


def handover_place(handover_stream: str, partitioned: bool) -> str:
    """Where a framework makes the hand-over stream for `handover_stream` ("side" or "rest"):
    "rest" (on the SMs the training's partition leaves, REST_PRIORITY), "partition" (on the
    training's SMs, HANDOVER_PRIORITY) or "device" (no partition: any SM, HANDOVER_PRIORITY).
    "rest" without a partition says so (NO_REST) and is "device"."""
    if not partitioned:
        if handover_stream == "rest":
            log.warning(NO_REST)
        return "device"
    return "rest" if handover_stream == "rest" else "partition"


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


class StreamOrder:
    """The hand-over stream's order against the training stream (module doc), for as long as the
    loader (or consumer) lives: `staging` before a batch's hand-over is queued, `handing` when it
    is handed to the training stream. `event` makes an event (torch.cuda.Event,
    paddle.device.Event)."""

    def __init__(self, event: Callable[[], Any]) -> None:
        self._event = event
        self._mark: Any = None  # the training stream when the last batch was handed out
        self._held: Any = None  # that batch: its step may not have run yet

    def staging(self, hand: Any, training: Any) -> None:
        """Make `hand` wait for the steps before the last batch handed out (for everything
        queued, before the first)."""
        if self._mark is None:
            hand.wait_stream(training)
        else:
            hand.wait_event(self._mark)

    def handing(self, done: Any, training: Any, batch: Any) -> None:
        """Make `training` wait for `batch`'s hand-over (`done`, recorded on the hand-over
        stream after it), mark where it stands (the end of the step before the one `batch` is
        for) and hold `batch` until the next one is handed out."""
        training.wait_event(done)
        self._mark = self._event()
        self._mark.record(training)
        self._held = batch


class InputSlots:
    """Which of a graphed step's `n` inputs the next staged batch is written into: one that
    neither the batch handed out last (its step may still run) nor a staged one is in. Every
    other input was last read by a step before the batch handed out last, which StreamOrder's
    wait covers. `restart()` when a new pass of staging starts (a new `one_ahead`): a batch the
    pass before staged but never handed out (it was left early) no longer needs its input."""

    def __init__(self, n: int = GRAPH_INPUTS) -> None:
        if n < 3:
            raise ValueError(f"a graphed step staged ahead needs 3 inputs (held, staged, free), "
                             f"got {n}")
        self.n = n
        self._held: int | None = None
        self._staged: list[int] = []

    def restart(self) -> None:
        self._staged.clear()

    def stage(self) -> int:
        slot = next(i for i in range(self.n) if i != self._held and i not in self._staged)
        self._staged.append(slot)
        return slot

    def hand(self) -> int:
        self._held = self._staged.pop(0)
        return self._held
