"""bench.kernels: the profiled steps' GPU work split between the step's stream and the loader's."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from test_loader_feed import _cpu_feed

from bench.kernels import gaps, summarize
from cli import main


def _event(stream: int, ts: float, dur: float, name: str = "k", cat: str = "kernel") -> dict:
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur,
            "args": {"stream": stream, "grid": [4, 2, 1], "block": [256, 1, 1]}}  # fmt: skip


def test_gaps_say_what_ran_between_steps_when_the_watched_kernel_started_beside_what() -> None:
    crop = {**_event(9, 1020, 150, "crop_resize_float16"), "args": {"stream": 9, "correlation": 5}}
    trace = {"traceEvents": [
        _event(7, 0, 1000, "conv"), _event(7, 1010, 10, "adam"),  # a 10 us gap: under the bar
        _event(7, 1200, 900, "conv"),  # 180 us after adam: the crop filled 150 of them
        crop, _event(11, 1100, 20, "nv12"), _event(11, 2200, 40, "nv12"),
        {"ph": "X", "cat": "cuda_driver", "name": "cuLaunchKernel", "ts": 400, "dur": 5,
         "args": {"correlation": 5}},  # launched 620 us before it ran
    ]}  # fmt: skip
    out = gaps(trace, watch="crop", over_us=30)
    assert out["train_stream"] == 7
    assert out["gaps"] == [{"us": 180.0, "after": "adam", "watched_us": 150.0,
                            "beside": {"crop_resize_float16": 1, "nv12": 1}}]  # fmt: skip
    assert out["watch"] == {"name": "crop", "kernels": 1, "streams": ["9"],
                            "launch_to_start_us": [620.0],
                            # the loader's other kernels while the crop ran, and otherwise
                            "others": {"nv12": [1, 20.0, 1, 40.0]}}  # fmt: skip
    with pytest.raises(ValueError, match="no GPU work"):
        gaps({"traceEvents": []})


def test_summary_splits_the_steps_stream_from_the_loaders_and_their_overlap() -> None:
    trace = {"traceEvents": [
        _event(7, 0, 100, "conv"), _event(7, 150, 150, "conv"),  # the step: most device time
        _event(9, 50, 30, "nv12"),  # inside the step's first kernel: 30 beside it
        _event(9, 90, 70, "nv12"),  # 10 + 10 beside (90-100, 150-160), 50 in the gap
        _event(11, 400, 20, "resize"),  # after the step: 0 beside
        _event(9, 400, 10, "copy", cat="gpu_memcpy"),
        {"ph": "X", "cat": "cpu_op", "name": "aten::add", "ts": 0, "dur": 1000},  # host: ignored
        {"ph": "i", "cat": "kernel", "name": "marker", "ts": 5},  # not a span: ignored
    ]}  # fmt: skip
    out = summarize(trace, steps=2)
    train, loader = out["train_stream"], out["loader"]
    assert train["stream"] == 7 and train["kernels_per_step"] == 1.0
    assert train["kernel_ms_per_step"] == 0.125 and train["copies_per_step"] == 0
    assert loader["streams"] == 2 and loader["kernels_per_step"] == 1.5
    assert loader["kernel_ms_per_step"] == 0.06 and loader["copy_ms_per_step"] == 0.005
    assert loader["kernel_ms_beside_step"] == 0.025  # (30 + 20) us over 2 steps
    top = loader["top"]
    assert [r["name"] for r in top] == ["nv12", "resize"]  # by device time
    assert top[0] == {"name": "nv12", "per_step": 1.0, "ms_per_step": 0.05, "mean_us": 50.0,
                      "blocks": 8.0, "threads": 256}  # fmt: skip


def test_summary_refuses_a_profile_without_gpu_work() -> None:
    with pytest.raises(ValueError, match="no GPU work"):
        summarize({"traceEvents": [{"ph": "X", "cat": "cpu_op", "ts": 0, "dur": 1}]}, steps=4)


def test_bench_feed_profile_needs_the_stand_in(prepared) -> None:
    """--profile-steps profiles through PyTorch: the Paddle step refuses it, before any timing."""
    res = CliRunner().invoke(main, _cpu_feed(prepared, "--profile-steps", "4"))
    assert res.exit_code == 1 and "has no profiler" in res.output, res.output
    assert not any(line.startswith("{") for line in res.output.splitlines())
