"""loader.gpu._Segment's plan-line check on real DALI pipelines (CPU ones: the check only reads
the line numbers a pipeline returns, whichever device made them)."""

from __future__ import annotations

import numpy as np
import pytest
from nvidia.dali import fn, pipeline_def, types
from test_loader import world  # noqa: F401 - module fixture

from loader import LoaderError
from loader.gpu import _Segment, host_rss_gb

BATCH, PIPES, CHUNKS = 4, 2, 8


def _lines(p: int, bad_chunk: int | None):  # noqa: ANN202 - a DALI source callback
    def lines(info) -> np.ndarray:  # noqa: ANN001 - DALI's BatchInfo
        i = info.iteration
        got = np.arange(i * BATCH, (i + 1) * BATCH, dtype=np.int32)
        if i * PIPES + p == bad_chunk:
            got[[0, 1]] = got[[1, 0]]
        return got.reshape(BATCH, 1)

    return lines


@pipeline_def(batch_size=BATCH, num_threads=1, device_id=None, prefetch_queue_depth=1)
def _graph(lines):  # noqa: ANN001, ANN202 - DALI graph definition
    ids = fn.external_source(source=lines, batch=True, batch_info=True, dtype=types.INT32)
    return ids * 10, ids  # (clips, line ids)


def _pipes(bad_chunk: int | None) -> list:
    """PIPES pipelines; pipeline p's i-th output is chunk k = i * PIPES + p: its file-list lines
    i*BATCH .. i*BATCH+BATCH-1, as readers.video returns them, two swapped in `bad_chunk`."""
    pipes = []
    for p in range(PIPES):
        pipe = _graph(_lines(p, bad_chunk))
        pipe.build()
        pipe.schedule_run()
        pipes.append(pipe)
    return pipes


def _segment(bad_chunk: int | None, lag: int) -> _Segment:
    chunks = [[np.zeros(0)] * CHUNKS]  # only their number matters here
    return _Segment([[]], chunks, _pipes(bad_chunk), depth=1, batch=BATCH, check_lag=lag)


@pytest.mark.parametrize("lag", [0, 3])
def test_every_chunk_in_plan_order_passes(lag: int) -> None:
    seg = _segment(None, lag)
    clips = [np.asarray(seg.take().as_array()).reshape(-1) for _ in range(CHUNKS)]
    seg.check_all()
    assert [c[0] for c in clips] == [10 * (k // PIPES) * BATCH for k in range(CHUNKS)]


def test_a_chunk_out_of_order_is_caught_at_once_without_lag() -> None:
    seg = _segment(bad_chunk=2, lag=0)
    seg.take(), seg.take()
    with pytest.raises(LoaderError, match=r"pipeline 0 returned file-list lines \[5, 4, 6, 7\] "
                                          r"where lines 4\.\.7 were due"):  # fmt: skip
        seg.take()


def test_a_lagged_check_catches_it_lag_chunks_later() -> None:
    seg = _segment(bad_chunk=2, lag=3)
    for _ in range(5):  # chunks 0..4: chunk 2 is not checked yet
        seg.take()
    with pytest.raises(LoaderError, match="pipeline 0 .* out of plan order"):
        seg.take()  # chunk 5 taken: chunk 2, three behind, is checked


def test_check_all_catches_a_fault_in_the_last_chunks() -> None:
    seg = _segment(bad_chunk=CHUNKS - 1, lag=3)
    for _ in range(CHUNKS):
        seg.take()
    with pytest.raises(LoaderError, match="pipeline 1 .* out of plan order"):
        seg.check_all()


def test_check_lag_is_checked(world: dict) -> None:  # noqa: F811
    from loader import LoaderConfig

    assert LoaderConfig(manifests=world["manifests"], gpu_check_lag=24).gpu_check_lag == 24
    with pytest.raises(ValueError, match="gpu_check_lag must be >= 0"):
        LoaderConfig(manifests=world["manifests"], gpu_check_lag=-1)


def test_shutdown_stops_every_pipeline_where_it_is_called() -> None:
    """A segment done with shuts its pipelines down in the calling thread (loader.gpu hands it to
    a thread of its own), through what DALI's Pipeline.__del__ calls: the backend pipeline is
    gone afterwards, so a DALI that renamed that method fails here, not on a GPU machine."""
    seg = _segment(None, lag=0)
    pipes = list(seg.pipes)
    for _ in range(CHUNKS):
        seg.take()
    seg.check_all()
    assert seg.shutdown() >= 0
    assert seg.pipes == [] and [p._pipe for p in pipes] == [None] * PIPES
    assert seg.shutdown() == pytest.approx(0, abs=0.01)  # nothing left to stop


def test_host_rss_is_this_process_resident_memory() -> None:
    """What each NVDEC segment's report gives as host_rss_gb: grows with memory this process
    touches (Linux; None elsewhere)."""
    before = host_rss_gb()
    if before is None:
        pytest.skip("no /proc/self/statm on this system")
    block = np.ones(200_000_000 // 8)  # 0.2 GB, touched
    assert host_rss_gb() >= before + 0.15
    del block
