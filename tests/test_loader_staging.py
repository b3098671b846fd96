"""loader.staging: the hand-over one batch ahead (LoaderConfig.handover_stream), its order and
where it applies. The streams themselves run on the GPU (bench/gpu_check.py --only staging)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from loader import LoaderConfig, LoaderError
from loader.staging import HANDOVER_STREAMS, one_ahead


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
    assert HANDOVER_STREAMS == ("step", "side")
    assert LoaderConfig(**base).handover_stream == "step"
    with pytest.raises(ValueError, match="handover_stream must be one of step, side, got 'rest'"):
        LoaderConfig(handover_stream="rest", **base)  # measured, starved: docs/BENCHMARKS.md


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
    ],
)
def test_batches_are_staged_only_where_the_hand_over_kernel_runs(options, staged) -> None:  # noqa: ANN001
    assert LoaderConfig(manifests="m", **options).stages_handover() is staged
