"""loader.staging: the hand-over one batch ahead (LoaderConfig.handover_stream), its order and
where it applies. The streams themselves run on the GPU (bench/gpu_check.py --only staging)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from loader import LoaderConfig, LoaderError
from loader.staging import GRAPH_INPUTS, HANDOVER_STREAMS, InputSlots, StreamOrder, one_ahead


def test_each_item_is_staged_before_the_one_before_is_handed_out() -> None:
    log: list[str] = []

    def stage(i: int) -> int:
        log.append(f"stage {i}")
        return i * 10

    def ready(s: int) -> int:
        log.append(f"ready {s // 10}")
        return s + 1

    assert list(one_ahead(range(4), stage, ready)) == [1, 11, 21, 31]
    assert log == ["stage 0", "stage 1", "ready 0", "stage 2", "ready 1", "stage 3", "ready 2",
                   "ready 3"]  # fmt: skip


def test_same_items_in_the_same_order_as_without_staging() -> None:
    items = [("v_A_g01_c01", 3), ("v_B_g02_c01", 0), ("v_A_g01_c01", 7)] * 5
    assert list(one_ahead(items, lambda x: x, lambda x: x)) == items
    assert list(one_ahead([], lambda x: x, lambda x: x)) == []
    assert list(one_ahead(["only"], lambda x: x, lambda x: x)) == ["only"]


def test_early_close_closes_the_source_with_one_item_staged() -> None:
    log: dict = {"staged": 0}

    def source() -> Iterator[int]:
        try:
            yield from range(100)
        finally:
            log["closed"] = True

    def stage(i: int) -> int:
        log["staged"] += 1
        return i

    it = one_ahead(source(), stage, lambda s: s)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()
    assert log == {"staged": 4, "closed": True}  # the 4th staged, never handed out


def test_source_errors_reach_the_consumer_after_the_items_before() -> None:
    def failing() -> Iterator[int]:
        yield 1
        yield 2
        raise LoaderError("shard-000.tar: sample v_X_g01_c01: cannot decode")

    it = one_ahead(failing(), lambda s: s, lambda s: s)
    assert next(it) == 1
    with pytest.raises(LoaderError, match="sample v_X_g01_c01: cannot decode"):
        next(it)  # item 2 is staged, the error comes while the next one is taken


def test_handover_stream_setting_is_checked() -> None:
    base = {"manifests": "m", "decode": "gpu"}
    assert HANDOVER_STREAMS == ("step", "side", "rest")
    assert LoaderConfig(**base).handover_stream == "step"
    assert LoaderConfig(handover_stream="rest", **base).handover_stream == "rest"
    with pytest.raises(ValueError, match="handover_stream must be one of step, side, rest, got "
                                         "'loader'"):  # fmt: skip
        LoaderConfig(handover_stream="loader", **base)


@pytest.mark.parametrize(
    ("options", "staged"),
    [
        ({"decode": "gpu"}, False),  # "step": on the training stream
        ({"decode": "gpu", "handover_stream": "side"}, True),
        ({"decode": "hybrid", "handover_stream": "side"}, True),
        ({"decode": "cpu", "handover_stream": "side"}, False),  # clips on the host
        ({"decode": "cpu", "clips_on": "gpu", "handover_stream": "side"}, True),
        ({"decode": "gpu", "handover_stream": "side", "output": "float"}, False),  # no hand-over
        ({"decode": "gpu", "handover_stream": "side", "handover": "ops"}, False),
        ({"decode": "gpu", "handover_stream": "rest"}, True),  # on the loader's SMs
        ({"decode": "cpu", "handover_stream": "rest"}, False),
    ],
)
def test_batches_are_staged_only_where_the_hand_over_kernel_runs(options, staged) -> None:  # noqa: ANN001
    assert LoaderConfig(manifests="m", **options).stages_handover() is staged


class Clip:
    """A batch that can be watched for being let go (weakref)."""

    def __init__(self, i: int) -> None:
        self.i = i


class Stream:
    """A CUDA stream as a list of what was queued on it (the order alone: no device)."""

    def __init__(self, name: str) -> None:
        self.name, self.ops = name, []

    def wait_stream(self, other: Stream) -> None:
        self.ops.append(("wait", other.name, len(other.ops)))

    def wait_event(self, event: Event) -> None:
        self.ops.append(("wait", event.stream.name, event.at))


class Event:
    def record(self, stream: Stream) -> None:
        self.stream, self.at = stream, len(stream.ops)


def test_the_batch_handed_out_last_is_held_until_the_next_one_is_handed_out() -> None:
    order, hand, training = StreamOrder(Event), Stream("hand"), Stream("training")
    refs: dict[int, weakref.ref] = {}
    alive_at_stage: dict[int, list[int]] = {}

    def stage(c: Clip) -> tuple[Clip, Event]:
        order.staging(hand, training)
        gc.collect()
        alive_at_stage[c.i] = sorted(i for i, r in refs.items() if r() is not None)
        refs[c.i] = weakref.ref(c)
        done = Event()
        done.record(hand)
        return c, done

    def ready(staged: tuple[Clip, Event]) -> Clip:
        order.handing(staged[1], training, staged[0])
        return staged[0]

    for first in (0, 3):  # two epochs of three: the order outlives the epoch's iterator
        for got in one_ahead((Clip(i) for i in range(first, first + 3)), stage, ready):
            del got  # a consumer that lets each batch go at once
    # staging k+1, batch k-1 (handed out, its step maybe still running) and k (staged) live on,
    # across the epoch's end too (staging 3 and 4: batch 2 is still held)
    assert alive_at_stage == {0: [], 1: [0], 2: [0, 1], 3: [2], 4: [2, 3], 5: [3, 4]}


def _run(epochs: list[int], graph_inputs: int = GRAPH_INPUTS) -> tuple[Stream, Stream]:
    """The feed loop's order with staging, over epochs of the given lengths (a negative length:
    the epoch is left after that many batches, one staged and never handed out): batch j written
    into an input chosen by InputSlots on the hand-over stream, the step on batch j reading it on
    the training stream."""
    hand, training = Stream("hand"), Stream("training")
    order, slots = StreamOrder(Event), InputSlots(graph_inputs)
    count = iter(range(10**6))

    def stage(j: int) -> tuple[int, Event]:
        order.staging(hand, training)
        hand.ops.append(("write", slots.stage(), j, len(training.ops)))
        done = Event()
        done.record(hand)
        return j, done

    def ready(staged: tuple[int, Event]) -> int:
        order.handing(staged[1], training, staged[0])
        return slots.hand()

    for n in epochs:
        slots.restart()
        batches = one_ahead((next(count) for _ in range(abs(n) + (n < 0))), stage, ready)
        for i, slot in enumerate(batches):
            training.ops.append(("step", slot))
            if n < 0 and i + 1 == -n:
                batches.close()  # the batch staged ahead is never handed out
                break
    return hand, training


@pytest.mark.parametrize("epochs", [[8], [3, 5, 2], [1, 1, 1, 1], [2, 2], [-2, 4], [3, -1, -2, 3]])
def test_no_input_is_written_before_the_steps_that_read_it_are_done(epochs) -> None:  # noqa: ANN001
    hand, training = _run(epochs)
    assert len([op for op in training.ops if op[0] == "step"]) == sum(abs(n) for n in epochs)
    waited = 0  # the training stream's ops the hand-over stream has waited for so far
    for op in hand.ops:
        if op[0] == "wait":
            waited = max(waited, op[2])
            continue
        _, slot, j, queued = op  # queued: the training stream's ops when the write was queued
        readers = [i for i, o in enumerate(training.ops[:queued]) if o == ("step", slot)]
        assert all(i < waited for i in readers), f"batch {j} written while a step read input {slot}"


def test_a_graphed_step_needs_three_inputs() -> None:
    with pytest.raises(ValueError, match="needs 3 inputs .held, staged, free., got 2"):
        InputSlots(2)


def test_the_hand_over_never_waits_for_the_step_queued_last() -> None:
    hand, training = _run([2, 2, 2])  # short epochs, each staged on its own
    waited = [op[2] for op in hand.ops if op[0] == "wait"]
    stagings = [len([o for o in training.ops[:w] if o[0] == "step"]) for w in waited]
    # staging batch j waits for the steps before the batch handed out last, across epochs too
    # (the first two of the run wait for everything queued, which is nothing yet): batches 2 and
    # 3 are staged with steps 0 and 1 queued, and wait for step 0 alone; 4 and 5 for 0-2 of 0-3
    assert stagings == [0, 0, 1, 1, 3, 3]
    assert GRAPH_INPUTS == 3


@pytest.mark.parametrize("path", [["train"], ["bench", "feed"], ["bench", "loader"]])
def test_the_commands_offer_every_hand_over_stream(path) -> None:  # noqa: ANN001
    import cli

    command = cli.main
    for name in path:
        command = command.commands[name]
    (option,) = [p for p in command.params if p.name == "handover_stream"]
    assert tuple(option.type.choices) == HANDOVER_STREAMS


@pytest.mark.parametrize(
    ("setting", "partitioned", "place", "warned"),
    [
        ("side", True, "partition", False),
        ("rest", True, "rest", False),
        ("side", False, "device", False),
        ("rest", False, "device", True),  # no SMs are left to the loader: said, not silent
    ],
)
def test_the_hand_over_stream_is_placed_where_the_setting_and_partition_allow(
    setting, partitioned, place, warned, caplog  # noqa: ANN001
) -> None:
    from loader.staging import NO_REST, handover_place

    with caplog.at_level("WARNING", logger="loader.staging"):
        assert handover_place(setting, partitioned) == place
    assert (NO_REST in caplog.text) is warned
