"""loader.gpu's segments on real DALI pipelines, CPU ones: Segment's plan-line check only reads
the line numbers a pipeline returns, whichever device made them, and GpuBackend's planning,
switching and shutting down of segments run the same with CPU pipelines reading its file lists
in place of NVDEC's readers.video."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from nvidia.dali import fn, pipeline_def, types
from test_loader import world  # noqa: F401 - module fixture

from loader import LoaderError
from loader.gpu import GpuBackend
from loader.hostmem import host_rss_gb
from loader.segment import Segment

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


def _segment(bad_chunk: int | None, lag: int) -> Segment:
    chunks = [[np.zeros(0)] * CHUNKS]  # only their number matters here
    return Segment([[]], chunks, _pipes(bad_chunk), depth=1, batch=BATCH, check_lag=lag)


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


def test_a_paced_shutdown_stops_one_pipeline_at_a_time() -> None:
    """With a pace, the pipelines are freed one at a time that far apart (each free holds Python's
    lock; loader.gpu): all of them, in (pipelines - 1) paces or more."""
    seg = _segment(None, lag=0)
    pipes = list(seg.pipes)
    for _ in range(CHUNKS):
        seg.take()
    seg.check_all()
    assert seg.shutdown(pace_s=0.1) >= 0.1 * (PIPES - 1)
    assert [p._pipe for p in pipes] == [None] * PIPES


def test_host_rss_is_this_process_resident_memory() -> None:
    """What each NVDEC segment's report gives as host_rss_gb: grows with memory this process
    touches (Linux; None elsewhere)."""
    before = host_rss_gb()
    if before is None:
        pytest.skip("no /proc/self/statm on this system")
    block = np.ones(200_000_000 // 8)  # 0.2 GB, touched
    assert host_rss_gb() >= before + 0.15
    del block


class _LineBackend(GpuBackend):
    """loader.gpu.GpuBackend with its readers.video pipelines swapped for CPU DALI pipelines that
    read the same file lists and return, per line, the (video, start) it names and the line
    number readers.video returns: everything about segments (planning, building halfway,
    switching, shutting down, plan order) runs as on a GPU, without NVDEC."""

    def _pipeline(self, file_list, chunks, seed, depth):  # noqa: ANN001, ANN202, ARG002
        index = {str(p): i for i, p in enumerate(self.paths)}
        rows = [ln.split() for ln in file_list.read_text().splitlines()]
        b = self.cfg.gpu_batch

        def source(info) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001 - DALI's BatchInfo
            part = rows[info.iteration * b : (info.iteration + 1) * b]
            named = np.array([[index[r[0]], int(r[2])] for r in part], np.int32)
            return named, np.array([[int(r[1])] for r in part], np.int32)

        @pipeline_def(batch_size=b, num_threads=1, device_id=None, prefetch_queue_depth=depth)
        def graph():  # noqa: ANN202 - DALI graph definition
            return tuple(fn.external_source(source=source, batch=True, batch_info=True,
                                            num_outputs=2, dtype=types.INT32))  # fmt: skip

        return graph()


def _named(outputs: list, n: int) -> list[tuple[int, int]]:
    rows = np.concatenate([np.asarray(o.as_array()) for o in outputs])[:n]
    return [(int(i), int(s)) for i, s in rows]


def test_segments_switch_in_plan_order_and_end_with_the_run(prepared, tmp_path) -> None:
    """Epochs run through segments of two epochs: every batch holds the planned clips, each next
    segment is built in the background halfway through the one before, none past the run's last
    epoch, and an epoch abandoned halfway is rebuilt from where it is asked for."""
    from loader import ClipLoader, LoaderConfig

    base = {"manifests": prepared.manifests, "shards": prepared.shards, "batch_size": 8,
            "num_threads": 1, "decode": "gpu", "gpu_batch": 4, "gpu_pipelines": 2,
            "cache_dir": tmp_path / "cache", "gpu_resize": "dali"}  # fmt: skip
    # (gpu_resize "dali": the stand-in pipelines' outputs come as they are, also on a GPU machine)
    gc.unfreeze()  # whatever an earlier test froze
    with ClipLoader(LoaderConfig(**base)) as loader:
        per_epoch = sum(len(b) for b in loader.batches(0))
        cfg = LoaderConfig(gpu_segment_clips=2 * per_epoch, gpu_last_epoch=6, **base)
        be = _LineBackend(cfg, loader.dataset, planner=loader.batches)
        try:
            for epoch in range(6):
                for outputs, batch in be.run(iter(loader.batches(epoch))):
                    want = [(int(r["index"]), int(r["start"])) for r in batch.requests]
                    assert _named(outputs, len(batch)) == want, (epoch, batch.number)
            abandoned = be.run(iter(loader.batches(6)))
            next(abandoned)
            abandoned.close()  # out of step: the segment is dropped
            got = [_named(o, len(b)) for o, b in be.run(iter(loader.batches(6)))]
            assert got == [[(int(r["index"]), int(r["start"])) for r in b.requests]
                           for b in loader.batches(6)]  # fmt: skip
        finally:
            be.close()
    assert gc.get_freeze_count() > 0  # the plans built in front are out of the GC's way
    report = be.segment_report()
    built = [(s["epochs"], s["background"]) for s in report["segments"]]
    # halfway through 0-1 (at epoch 1) 2-3 is built, and so on; 6 is the run's last epoch, so
    # the segment built for it holds it alone; after the abandoned epoch 6, 6 again, in front
    assert built == [([0, 1], False), ([2, 3], True), ([4, 5], True), ([6, 6], True),
                     ([6, 6], False)]  # fmt: skip
    assert report["retire_s"] >= 0 and report["switch_s"] >= 0
    events = be.segment_report(origin=0.0)["events"]
    kinds = [what for what, _, _ in events]
    # the three boundaries, each segment left shut down behind it, and the abandoned one too
    assert kinds.count("switch") == 3 and kinds.count("shutdown") == 4
    assert kinds.count("build") == 2 and kinds.count("build_background") == 3
    assert all(took >= 0 for _, _, took in events)
    shut = [took for what, _, took in events if what == "shutdown"]
    assert min(shut) >= cfg.gpu_pace_s * (cfg.gpu_pipelines - 1)  # paced, one pipeline at a time
