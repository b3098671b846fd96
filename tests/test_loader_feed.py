"""The fed-loader pieces on CPU: uint8 hand-over, the hybrid split, `bench feed` end to end.

GPU-only parts (NVDEC in the hybrid backend, the CUDA stream of the steps) are marked and skip
visibly on CPU machines; `ucf3d bench feed` on the GPU machine is where they are measured.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_loader import make, read_clip_indices, world  # noqa: F401 - module fixture

from cli import main
from loader import ClipLoader, LoaderConfig
from loader.bridge import normalize, to_paddle
from loader.hybrid import split

needs_gpu = pytest.mark.skipif(
    shutil.which("nvidia-smi") is None, reason="needs an NVIDIA GPU with NVDEC"
)


def test_uint8_output_keeps_frames_order_and_flips(world: dict) -> None:  # noqa: F811
    """uint8 FHWC out of DALI, normalised by the bridge: the same frames, crops and flips."""
    with make(world, output="uint8", scales=(1.0,), seed=7) as loader:
        plan, pos = loader.plan(1), 0
        for b in loader.epoch(1):
            got = read_clip_indices(b, plan[pos : pos + len(b.keys)], loader)
            assert got == [r["frames"].tolist() for r in plan[pos : pos + len(b.keys)]]
            pos += len(b.keys)
    assert pos == len(plan) and set(plan["flip"].tolist()) == {0, 1}


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_uint8_and_float_outputs_give_the_same_clips(world: dict, dtype: str) -> None:  # noqa: F811
    def epoch(output: str) -> tuple[list[str], np.ndarray]:
        with make(world, output=output, dtype=dtype, std=(1.0, 2.0, 0.5), seed=2) as loader:
            bs = list(loader.epoch(0))
        assert all(str(b.clips.dtype).endswith(dtype) for b in bs)
        return [k for b in bs for k in b.keys], np.concatenate([b.clips.numpy() for b in bs])

    keys_f, clips_f = epoch("float")
    keys_u, clips_u = epoch("uint8")
    assert keys_f == keys_u and clips_f.shape == clips_u.shape
    tol = 1e-5 if dtype == "float32" else 0.06  # fp16 rounding of values up to ~300
    assert np.abs(clips_f.astype(np.float32) - clips_u.astype(np.float32)).max() <= tol


def test_normalize_layout() -> None:
    import paddle

    x = np.arange(2 * 3 * 4 * 5 * 3, dtype=np.uint8).reshape(2, 3, 4, 5, 3)  # (N, T, H, W, C)
    out = normalize(paddle.to_tensor(x), (1.0, 2.0, 3.0), (1.0, 2.0, 4.0), "float32").numpy()
    want = (x.transpose(0, 4, 1, 2, 3) - np.array([1, 2, 3.0])[:, None, None, None]) / np.array(
        [1, 2, 4.0]
    )[:, None, None, None]
    assert out.shape == (2, 3, 3, 4, 5) and np.allclose(out, want)


def test_normalize_without_std_in_the_clips_dtype() -> None:
    """Hara's recipe (std 1): only the mean comes off; float16 out matches float32 to rounding."""
    import paddle

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2, 3, 4, 5, 3), dtype=np.uint8)
    mean = (114.77, 107.74, 99.48)
    want = x.transpose(0, 4, 1, 2, 3) - np.array(mean)[:, None, None, None]
    half = normalize(paddle.to_tensor(x), mean, (1.0, 1.0, 1.0), "float16")
    full = normalize(paddle.to_tensor(x), mean, (1.0, 1.0, 1.0), "float32").numpy()
    assert half.dtype == paddle.float16 and full.dtype == np.float32
    assert np.allclose(full, want, atol=1e-4)
    # float16 rounding of values up to 255 (1/8 apart), plus the mean's own (GPU) rounding
    assert np.abs(half.numpy().astype(np.float32) - want).max() <= 1 / 16 + 1 / 32


def test_bridge_concatenates_parts_in_order() -> None:
    import paddle

    a, b = np.zeros((3, 2), np.uint8), np.ones((2, 2), np.uint8)
    out = to_paddle([paddle.to_tensor(a), paddle.to_tensor(b)], n=4).numpy()
    assert out.tolist() == [[0, 0]] * 3 + [[1, 1]]


@pytest.mark.parametrize("share", [0.0, 0.1, 0.25, 0.5, 0.7])
def test_hybrid_split_keeps_plan_order_and_coverage(world: dict, share: float) -> None:  # noqa: F811
    """GPU head + CPU tail of every batch = the batch: the same keys as a CPU-only epoch."""
    with make(world, batch_size=40, seed=4) as loader:
        batches = loader.batches(3)
    cpu_only = [k for b in batches for k in b.keys]
    joined = []
    for b in batches:
        head, tail = split(b, share, gpu_batch=4)
        assert len(head) % 4 == 0 or len(head) == len(b)  # whole NVDEC chunks where possible
        assert len(head) >= min(len(b), 4)
        parts = [head] + ([tail] if tail is not None else [])
        joined += [k for p in parts for k in p.keys]
        req = np.concatenate([p.requests for p in parts])
        assert np.array_equal(req, b.requests)
        assert np.array_equal(np.concatenate([p.labels for p in parts]), b.labels)
        assert all(p.epoch == b.epoch and p.number == b.number for p in parts)
    assert joined == cpu_only
    if share == 0:
        assert all(split(b, share, 4)[1] is None for b in batches)


def test_hybrid_config(world: dict) -> None:  # noqa: F811
    cfg = LoaderConfig(manifests=world["manifests"], batch_size=5, num_threads=2, decode="hybrid")
    assert cfg.clip_output() == "uint8"
    with pytest.raises(ValueError, match="cpu_share"):
        LoaderConfig(manifests=world["manifests"], decode="hybrid", cpu_share=1.0)


def test_clips_are_handed_over_where_the_model_runs(world: dict) -> None:  # noqa: F811
    from loader.config import clips_on_for

    base = {"manifests": world["manifests"]}
    host = LoaderConfig(**base)
    assert host.clips_device() == "host" and host.clip_output() == "float"
    on_gpu = LoaderConfig(clips_on="gpu", **base)  # CPU decoding for a GPU consumer
    assert on_gpu.clips_device() == "gpu" and on_gpu.clip_output() == "uint8"
    assert LoaderConfig(clips_on="gpu", output="float", **base).clip_output() == "float"
    assert LoaderConfig(decode="gpu", **base).clips_device() == "gpu"
    with pytest.raises(ValueError, match="clips_on 'host' needs decode='cpu'"):
        LoaderConfig(decode="hybrid", clips_on="host", **base)
    with pytest.raises(ValueError, match="clips_on must be one of"):
        LoaderConfig(clips_on="cuda", **base)
    assert [clips_on_for(d, "cpu") for d in ("gpu", "cpu")] == ["gpu", "host"]
    assert clips_on_for("cpu", "gpu") == clips_on_for("cpu", "hybrid") == "gpu"


def _cpu_feed(prepared, *extra: str, seconds: str = "1", warmup: str = "0") -> list[str]:  # noqa: ANN001
    """`ucf3d bench feed` arguments for a tiny Paddle step on the CPU (batch 2, 32-pixel clips)."""
    return ["bench", "feed", "--split", "1", "--manifests", str(prepared.manifests),
            "--shards", str(prepared.shards), "--device", "cpu", "--model", "tiny",
            "--batch-size", "2", "--clip-size", "32", "--threads", "2", "--seconds", seconds,
            "--warmup", warmup, "--amp", "none", *extra]  # fmt: skip


def test_bench_feed_runs_on_cpu(prepared) -> None:
    """`ucf3d bench feed` end to end with the project's Paddle step on the CPU: one JSON line."""
    args = _cpu_feed(prepared, "--segment-clips", "4000", "--unfed-seconds", "1", seconds="2",
                     warmup="1")  # fmt: skip
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert out["bench"] == "feed" and out["consumer"].startswith("paddle")
    assert out["loader"]["gpu_segment_clips"] == 4000  # every loader setting is in the line
    assert out["unfed"]["clips_per_s"] > 0 and out["fed"]["clips_per_s"] > 0
    assert out["fed_vs_unfed"] == round(
        out["fed"]["clips_per_s"] / out["unfed"]["clips_per_s"], 3
    )
    assert 0 <= out["fed"]["data_wait_pct"] <= 100 and out["loader"]["decode"] == "cpu"
    assert out["loader"]["batch_size"] == 2 and out["device"] == "cpu"
    assert out["cuda_work_queues"] == "cpu"  # loader.workqueues: for steps on the GPU only
    assert out["loader"]["drop_last"] is True  # every fed step has 2 clips, as the unfed ones
    assert out["loader"]["handover"] == "kernel" and out["handover"] == "dali"  # CPU: float out
    for phase in ("unfed", "fed"):  # the host's period per step, split: data + launch + fence
        host, p = out[phase]["host_ms_per_step"], out[phase]
        period = 1000 * p["wall_s"] / p["steps"]
        assert abs(host["data"] + host["launch"] + host["fence"] - period) < 0.05 * period + 1
        assert 0 <= host["data_cpu"] <= host["data"] + 1 and host["launch"] > 0
        assert sum(p["steps_by_second"]) == p["steps"]  # the timeline holds every timed step
        # the hypervisor's steal beside it, second by second (cores)
        assert len(p["steal_by_second"]) == len(p["steps_by_second"]), p
        assert all(0 <= c <= out["cpu_count"] for c in p["steal_by_second"]), p
    assert 1 <= out["unfed"]["wall_s"] < out["fed"]["wall_s"]  # --unfed-seconds 1, --seconds 2
    gil = out["fed"]["gil"]  # Python's lock held by native code while fed
    assert gil["probed"] and gil["stalls"] >= 0 and gil["longest_ms"] >= 0
    assert "_t0" not in out["fed"]
    assert all(n >= 1 and s >= 0 for n, s, _ in gil["gc"].values())  # collections by generation
    taken = out["fed"]["host_taken"]  # Linux: the training thread's preemptions, steal, throttling
    assert taken["preempted"] >= 0 and taken["steal_s"] >= 0, taken
    assert taken["threads"] > 1 and taken["load_1m"] >= 0, taken  # the loader's threads too
    assert taken["busy_s"] > 0 and 0 <= taken["steal_pct"] <= 100, taken
    by_thread = out["fed"]["threads_cpu"]  # cores by thread name: the process's own work
    assert by_thread and all(cores >= 0 and n >= 1 for cores, n in by_thread.values()), by_thread
    assert sum(c for c, _ in by_thread.values()) <= out["fed"]["cpu_cores_used"] + 0.2, by_thread


def test_bench_feed_warns_when_the_hypervisor_took_the_machines_cpu(caplog) -> None:  # noqa: ANN001
    """A fed window in which the hypervisor stole STEAL_WARN_PCT or more of the machine's busy CPU
    time is flagged as the machine's (a log warning); a quiet one is not."""
    import logging

    from bench.feed import STEAL_WARN_PCT, _warn_if_stolen

    with caplog.at_level(logging.WARNING, logger="bench.feed"):
        _warn_if_stolen({"steal_s": 0.26, "busy_s": 199.0, "steal_pct": 0.1})
        assert not caplog.records
        _warn_if_stolen({"steal_s": 66.5, "busy_s": 280.0, "steal_pct": 23.8})
    assert len(caplog.records) == 1 and "23.8 %" in caplog.records[0].getMessage()
    assert 0.1 < STEAL_WARN_PCT < 3  # between the quiet and the noisy hosts measured


def test_bench_feed_reuses_the_step_alone_from_its_cache(prepared, tmp_path: Path) -> None:
    """--unfed-cache: the first run measures the step alone and keeps it; a run with the same step
    settings reuses it (and says so), one with other step settings measures again."""
    cache = tmp_path / "unfed.json"
    args = _cpu_feed(prepared, "--unfed-cache", str(cache))
    runs = []
    # loader and probe settings only, then a change of the step
    for extra in ([], ["--prefetch", "3", "--no-gil-probe", "--gc-census"], ["--batch-size", "3"]):
        res = CliRunner().invoke(main, args + extra)
        assert res.exit_code == 0, res.output
        runs.append(json.loads(res.output.strip().splitlines()[-1]))
    first, same_step, other_step = runs
    assert "unfed_reused" not in first and "unfed_reused" not in other_step
    assert same_step["unfed_reused"]["from"] == str(cache)
    assert same_step["unfed"] == first["unfed"]
    assert same_step["fed"]["gil"]["probed"] is False and first["fed"]["gil"]["probed"] is True
    # the census (what the fed loop left in reference cycles, by type) only where asked for
    assert isinstance(same_step["fed"]["gil"]["census"], dict)
    assert "census" not in first["fed"]["gil"]
    assert same_step["fed_vs_unfed"] == round(
        same_step["fed"]["clips_per_s"] / first["unfed"]["clips_per_s"], 3
    )
    assert len(json.loads(cache.read_text())) == 2  # batch 2 and batch 3
    cache.write_text("{not json")
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1 and f"Error: {cache}: not an unfed cache" in res.output


def test_bench_feed_refuses_a_batch_no_epoch_fills(prepared) -> None:
    """With the partial batch dropped, a batch larger than an epoch would feed nothing, for ever."""
    res = CliRunner().invoke(main, _cpu_feed(prepared, "--batch-size", "4096"))
    assert res.exit_code == 1 and "no full batch of 4096 clips" in res.output
    assert "--keep-last" in res.output


def test_bench_feed_torch_stand_in_refuses_a_cpu(prepared) -> None:
    args = ["bench", "feed", "--split", "1", "--manifests", str(prepared.manifests),
            "--device", "cpu", "--consumer", "torch", "--batch-size", "2"]  # fmt: skip
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1 and "stand-in consumer needs" in res.output


@pytest.mark.gpu
@needs_gpu
def test_hybrid_matches_cpu_on_the_gpu(prepared, tmp_path: Path) -> None:
    """NVDEC head + CPU tail decode the plan to the CPU backend's keys and (within codec
    tolerance) pixels."""
    clips = {}
    for decode in ("cpu", "hybrid"):
        cfg = LoaderConfig(manifests=prepared.manifests, shards=prepared.shards, batch_size=16,
                           num_threads=2, decode=decode, output="uint8", seed=3, cpu_share=0.5,
                           gpu_batch=4, gpu_pipelines=2, cache_dir=tmp_path / "cache")  # fmt: skip
        with ClipLoader(cfg) as loader:
            clips[decode] = [(b.keys, b.clips.numpy()) for b in loader.epoch(1)]
            if decode == "hybrid":  # the CPU part too reaches the GPU inside DALI (loader.cpu)
                outputs = [o for chunks, _ in loader.raw_epoch(2) for o in chunks]
                assert {type(o).__name__ for o in outputs} == {"TensorListGPU"}
                waited = loader.backend.waited  # what bench feed reports as hybrid_wait_s
                assert set(waited) == {"gpu", "cpu"} and min(waited.values()) >= 0
                assert sum(waited.values()) > 0
    for (keys_c, c), (keys_h, h) in zip(clips["cpu"], clips["hybrid"], strict=True):
        assert keys_c == keys_h
        assert np.abs(c - h).mean() < 2.0


@pytest.mark.gpu
@needs_gpu
def test_cpu_decoding_hands_over_on_the_gpu(prepared) -> None:
    """clips_on="gpu": the CPU pipeline's clips come out of DALI on the GPU, the same clips."""
    clips = {}
    for on in ("host", "gpu"):
        cfg = LoaderConfig(manifests=prepared.manifests, shards=prepared.shards, batch_size=8,
                           num_threads=2, output="uint8", seed=3, clips_on=on)  # fmt: skip
        with ClipLoader(cfg) as loader:
            outputs = [out for out, _ in loader.raw_epoch(0)]
            kind = "TensorListGPU" if on == "gpu" else "TensorListCPU"
            assert {type(o).__name__ for o in outputs} == {kind}
            batches = list(loader.epoch(1))
            assert all(b.clips.place.is_gpu_place() == (on == "gpu") for b in batches)
            clips[on] = [(b.keys, b.clips.numpy()) for b in batches]
    for (keys_h, h), (keys_g, g) in zip(clips["host"], clips["gpu"], strict=True):
        assert keys_h == keys_g and np.array_equal(h, g)


def test_nvdec_segments_plan_up_to_their_clips_and_the_runs_last_epoch(prepared, tmp_path) -> None:
    """A segment holds epochs until it has gpu_segment_clips clips, and never one past
    gpu_last_epoch, so a long enough segment serves the whole run and none follows it (the
    backend is built for real on the prepared set; NVDEC pipelines start only in run())."""
    from loader.gpu import GpuBackend

    data = {"manifests": prepared.manifests, "shards": prepared.shards, "batch_size": 8,
            "num_threads": 2, "decode": "gpu", "cache_dir": tmp_path / "cache"}  # fmt: skip
    with ClipLoader(LoaderConfig(**data)) as loader:
        per_epoch = sum(len(b) for b in loader.batches(0))
        cases = [(2 * per_epoch, None, 0, 2),  # two epochs' clips: two epochs
                 (10**9, 3, 0, 4), (10**9, 3, 2, 2),  # the rest of the run, however long
                 (1, 3, 3, 1)]  # fmt: skip
        for clips, last, first, want in cases:
            cfg = LoaderConfig(gpu_segment_clips=clips, gpu_last_epoch=last, **data)
            be = GpuBackend(cfg, loader.dataset, planner=loader.batches)
            try:
                epochs = be._plan(first, loader.batches(first))
                assert len(epochs) == want, (clips, last, first)
                assert [e[0].epoch for e in epochs] == list(range(first, first + want))
                assert be.past_last(first + want) == (last is not None and first + want > last)
            finally:
                be.close()
    with pytest.raises(ValueError, match="gpu_last_epoch"):
        LoaderConfig(gpu_last_epoch=-1, **data)


def test_hybrid_share_is_fixed_per_epoch_and_adapts_to_waits(prepared, tmp_path: Path) -> None:
    """A planned epoch keeps the share it was cut with; epochs planned later move at most one
    NVDEC chunk, on the CPU path's wait against the NVDEC path's since the last plan (up only when
    the CPU part never held the consumer), and never back up to a share the CPU could not keep
    (the backend is built for real; NVDEC pipelines start only in run())."""
    from bench.feed import hybrid_report, nvdec_report
    from loader.hybrid import HybridBackend

    data = {"manifests": prepared.manifests, "shards": prepared.shards, "batch_size": 8,
            "num_threads": 2, "decode": "hybrid", "cache_dir": tmp_path / "cache"}  # fmt: skip
    cfg = LoaderConfig(gpu_batch=2, **data)  # a chunk is 2 of 8 clips: the share moves by 1/4
    with ClipLoader(cfg) as loader:
        be = HybridBackend(cfg, loader.dataset, planner=loader.batches)
        try:
            heads = be._heads(loader.batches(0))  # what the NVDEC file lists would hold
            assert be.shares == {0: 0.25}  # starts at one chunk
            assert [len(h) for h in heads] == [len(split(b, 0.25, 2)[0])
                                                for b in loader.batches(0)]  # fmt: skip
            assert len(heads[0]) == 6  # 2 of a full batch's 8 clips go to the CPU
            be._record(wait_gpu=2.0, wait_cpu=0.3, wall=10.0)  # the CPU held it, if briefly: hold
            assert be._share_of(1) == 0.25
            be._record(wait_gpu=2.0, wait_cpu=0.05, wall=10.0)  # the CPU part was always ready...
            assert be.share == 0.25 and be._share_of(0) == 0.25  # ...acted on when planning
            assert be._share_of(2) == 0.5
            assert be._share_of(3) == 0.5  # one step per plan, not per epoch
            for _ in range(5):  # epochs run, each ready on the CPU, before one new plan
                be._record(wait_gpu=2.0, wait_cpu=0.0, wall=10.0)
            assert be._share_of(4) == 0.75
            be._record(wait_gpu=2.0, wait_cpu=0.0, wall=10.0)
            assert be._share_of(5) == 0.75  # one chunk always stays on NVDEC
            be._record(wait_gpu=2.0, wait_cpu=1.0, wall=10.0)  # between 1 % and 3/4: hold
            assert be._share_of(6) == 0.75
            be._record(wait_gpu=0.02, wait_cpu=0.07, wall=10.0)  # under 1 % waited: hold
            assert be._share_of(7) == 0.75
            be._record(wait_gpu=2.0, wait_cpu=1.6, wall=10.0)  # the CPU held it: one chunk less
            assert be._share_of(8) == 0.5
            for epoch in range(9, 13):  # and never that much again, however ready the CPU
                be._record(wait_gpu=2.0, wait_cpu=0.0, wall=10.0)
                assert be._share_of(epoch) == 0.5
            for epoch in range(13, 17):
                be._record(wait_gpu=1.0, wait_cpu=3.0, wall=10.0)
                be._share_of(epoch)
            assert be.share == 0.0
            be._record(wait_gpu=2.0, wait_cpu=0.0, wall=10.0)  # no CPU part, no CPU wait
            assert be._share_of(17) == 0.0
            assert be._share_of(0) == 0.25 and be._share_of(8) == 0.5  # planned epochs keep theirs
            report = hybrid_report(be)  # what bench feed prints
            assert report["hybrid_shares"] == {"0": 4, "0.25": 3, "0.5": 7, "0.75": 4}
            assert report["hybrid_wait_s"] == {"gpu": 0.0, "cpu": 0.0}  # no epoch run yet
            assert nvdec_report(be) == {"nvdec_segments": {  # no run end known: 50,000 clips
                "segment_clips": 50_000, "segments": [], "switch_s": 0.0, "retire_s": 0.0},
                "resize": "dali"}  # fmt: skip
        finally:
            be.close()
    whole = LoaderConfig(gpu_batch=8, **data)  # a batch is one chunk: nothing to give the CPU
    with ClipLoader(whole) as loader:
        be = HybridBackend(whole, loader.dataset, planner=loader.batches)
        be._record(wait_gpu=5.0, wait_cpu=0.0, wall=10.0)
        assert be._share_of(0) == be._share_of(1) == 0.0
        be.close()
    with ClipLoader(LoaderConfig(**{**data, "decode": "cpu"})) as loader:
        assert hybrid_report(loader.backend) == {} and nvdec_report(loader.backend) == {}
    fixed = LoaderConfig(cpu_share=0.3, gpu_batch=2, **data)  # cut as 0.25: 6 of 8 on NVDEC
    with ClipLoader(fixed) as loader:
        be = HybridBackend(fixed, loader.dataset, planner=loader.batches)
        be._record(wait_gpu=5.0, wait_cpu=0.0, wall=10.0)
        assert be._share_of(1) == 0.25
        be._record(wait_gpu=0.0, wait_cpu=5.0, wall=10.0)
        assert be._share_of(2) == 0.25
        be.close()


@pytest.mark.gpu
@needs_gpu
def test_queue_probe_runs_on_the_gpu() -> None:
    """bench.queue_probe: one JSON line per blocker kind, every probed stream accounted for."""
    import subprocess
    import sys

    pytest.importorskip("torch")
    root = Path(__file__).resolve().parent.parent
    for pattern in ("spins", "wait"):
        cmd = [sys.executable, "-m", "bench.queue_probe", "--probes", "8", "--sleep-ms", "20",
               "--kinds", "side,green", "--pattern", pattern]  # fmt: skip
        out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120, check=True)
        lines = [json.loads(line) for line in out.stdout.splitlines()]
        assert [r["blocker"] for r in lines] == ["side", "green"]
        for r in lines:
            assert r["pattern"] == pattern and 0 <= r["blocked"] <= 8
            assert r["blocked"] == r["blocked_made_before"] + r["blocked_made_after"]


def test_device_split_from_timing_marks() -> None:
    """bench feed's device view of a period: each step's own time, and the time between steps."""
    from bench.feedloop import device_split
    from bench.sweep import _host

    class Stamp:  # a timing event that completed at `ms` (elapsed_time as CUDA events give it)
        def __init__(self, ms: float) -> None:
            self.ms = ms

        def elapsed_time(self, later: Stamp) -> float:
            return later.ms - self.ms

    marks = [(Stamp(0), Stamp(60)), (Stamp(65), Stamp(125)), (Stamp(129), Stamp(190))]
    split = device_split(marks)
    assert split == {"step": round((60 + 60 + 61) / 3, 2), "between": 4.5, "step_median": 60,
                     "step_max": 61, "between_median": 4.5, "between_max": 5,
                     "between_pct": round(100 * 9 / (120 + 9), 2)}  # fmt: skip
    phase = {"host_ms_per_step": {"data": 1, "data_cpu": 1, "launch": 2, "launch_cpu": 2,
                                  "fence": 3}, "device_ms_per_step": split,
             "hybrid_wait_s": {"gpu": 1.5, "cpu": 0.25},
             "hybrid_shares": {"0.125": 7, "0.25": 2},
             "nvdec_segments": {"segments": [
                 {"epochs": [0, 230], "clips": 50000, "build_s": 1.5, "background": False},
                 {"epochs": [231, 462], "clips": 50112, "build_s": 6.25, "background": True}],
                 "switch_s": 0.012, "retire_s": 0.8},
             "host_taken": {"steal_s": 9.0, "busy_s": 200.0, "steal_pct": 4.5}}  # fmt: skip
    line = _host(phase)
    assert line.endswith("; steal 4.5 %")  # the hypervisor's share: a noisy machine's line
    assert "device ms/step: step 60.33, between 4.5 (longest 61 / 5), 6.98 % between" in line
    assert "hybrid waited GPU 1.5 s, CPU 0.25 s, CPU shares {'0.125': 7, '0.25': 2}" in line
    assert ("NVDEC segments [50000 clips 1.5 s, 50112 clips 6.25 s bg], boundaries 0.012 s, "
            "shut-downs 0.8 s") in line


def test_gil_probe_sees_the_lock_held_by_native_code_not_a_sleep() -> None:
    """bench.measure.GilProbe: a builtin that never lets go of Python's lock (sum over a range,
    in C) shows as one stall about as long as it ran; a sleep as long, none."""
    import time

    from bench.measure import GilProbe

    with GilProbe() as probe:
        time.sleep(0.1)
        start = time.perf_counter()
        time.sleep(0.3)
        slept = time.perf_counter()
        sum(range(12_000_000))  # holds the lock throughout
        held = time.perf_counter() - slept
        time.sleep(0.1)
    assert held > 0.1, "the machine summed too fast to tell"
    asleep = probe.summary(start, slept - 0.01)
    assert asleep["stalls"] == 0, asleep
    busy = probe.summary(slept - 0.01, slept + held + 0.1)
    assert busy["longest_ms"] >= 0.6 * 1000 * held, (busy, held)
    assert busy["long"] and busy["long"][0][0] >= 0


def test_gil_probe_without_its_thread_still_times_collections() -> None:
    """GilProbe(period_s=None) (bench feed --no-gil-probe): no thread wakes to time the lock, so
    a held lock goes unseen, and the garbage collections are timed as before."""
    import gc
    import threading
    import time

    from bench.measure import GilProbe

    before = {t.name for t in threading.enumerate()}
    with GilProbe(period_s=None) as probe:
        assert "gil-probe" not in {t.name for t in threading.enumerate()} - before
        start = time.perf_counter()
        sum(range(3_000_000))  # holds the lock
        gc.collect()
        end = time.perf_counter()
    out = probe.summary(start, end)
    assert out["probed"] is False and out["stalls"] == 0, out
    assert out["gc"]["2"][0] >= 1, out


def test_gil_probe_lists_slow_collections_and_with_census_what_cycles_held() -> None:
    """A collection that runs a slow finalizer is listed with the few objects it freed; with
    census (bench feed --gc-census) objects found in cycles are kept and counted by type."""
    import gc
    import time

    from bench.measure import GilProbe

    class Slow:
        def __del__(self) -> None:
            time.sleep(0.03)  # as a finalizer that waits for the GPU would

    class Knot:
        pass

    gc.collect()  # nothing left over from before
    with GilProbe(period_s=None) as probe:
        start = time.perf_counter()
        slow = Slow()
        slow.me = slow  # a cycle: only the collector frees it
        del slow
        gc.collect()
        end = time.perf_counter()
    out = probe.summary(start, end)
    assert "census" not in out
    (_, took, generation, freed), = out["gc_slow"]
    assert took >= 30 and generation == 2 and 1 <= freed <= 3, out  # the object (and its dict)

    with GilProbe(period_s=None, census=True) as probe:
        for _ in range(3):
            knot = Knot()
            knot.me = knot
        del knot
    kept = probe.summary(0, time.perf_counter())["census"]
    assert kept[f"{__name__}.{Knot.__qualname__}"] == 3, kept
    assert gc.garbage == [] and not gc.get_debug() & gc.DEBUG_SAVEALL  # left as it was


def test_gil_probe_times_collections_and_host_counters_count_preemptions() -> None:
    """GilProbe times garbage collections by generation (gc.collect() is one of generation 2);
    host_counters: this thread, sharing one core with a process that spins on it, is preempted
    (/proc/self/task/<id>/status) and the delta says so; the counters never run backwards."""
    import gc
    import os
    import subprocess
    import sys
    import time

    from bench.measure import GilProbe, host_counters, host_delta

    with GilProbe() as probe:
        start = time.perf_counter()
        garbage = [[i] for i in range(200_000)]
        gc.collect()
        del garbage
        end = time.perf_counter()
    collected = probe.summary(start, end)["gc"]
    assert collected["2"][0] >= 1 and collected["2"][2] > 0, collected
    mine = os.sched_getaffinity(0)  # this thread's (Linux: pid 0 is the calling thread)
    core = min(mine)
    spin = f"import os, time; os.sched_setaffinity(0, {{{core}}}); t = time.time()\n"
    spinner = subprocess.Popen([sys.executable, "-c", spin + "while time.time() - t < 5: pass"])
    try:
        os.sched_setaffinity(0, {core})
        time.sleep(0.3)  # the spinner starts and takes the core
        before = host_counters()
        t_end = time.perf_counter() + 0.5
        while time.perf_counter() < t_end:
            sum(range(20_000))
        delta = host_delta(before, host_counters())
    finally:
        os.sched_setaffinity(0, mine)
        spinner.kill()
        spinner.wait()
    assert set(delta) >= {"steal_s", "preempted", "threads"} and min(delta.values()) >= 0, delta
    assert delta["preempted"] > 0, delta


def test_by_second_spreads_a_counter_over_the_seconds_of_a_window() -> None:
    """BySecond: the counter's growth in each whole second from t0, read only as seconds end; a
    late read spreads its growth over the seconds it spans; the last, partial second counts."""
    from bench.measure import BySecond

    counter = iter([10.0, 11.0, 15.0, 15.5])  # read at t0, then at three second ends
    series = BySecond(lambda: next(counter), t0=100.0)
    for t in (100.2, 100.9, 101.1, 101.5):  # second 0 ends at 101.1: one read (11 - 10)
        series.at(t)
    series.at(103.2)  # seconds 1 and 2 end together: 15 - 11 over two seconds
    assert series.series(103.7) == [1.0, 2.0, 2.0, 0.5]  # second 3, partial: 15.5 - 15
    unknown = BySecond(lambda: None, t0=0.0)  # no counter on this system: zeros
    unknown.at(1.5)
    assert unknown.series(1.8) == [0.0, 0.0]


def test_threads_cpu_counts_a_busy_thread_by_its_name() -> None:
    """threads_cpu: a thread named "spinner-7" spinning ~0.4 s shows as group "spinner-#" with
    about that much CPU over the window; a thread that sleeps uses next to none."""
    import threading
    import time

    from bench.measure import thread_ticks, threads_cpu

    go, stop = threading.Event(), threading.Event()

    def spin() -> None:
        go.wait()
        while not stop.is_set():
            sum(range(10_000))

    def rest() -> None:
        stop.wait()

    spinner = threading.Thread(target=spin, name="spinner-7")
    sleeper = threading.Thread(target=rest, name="sleeper-1")
    spinner.start(), sleeper.start()
    for t in (spinner, sleeper):  # Linux names native threads after Python's only from 3.14 on
        with open(f"/proc/self/task/{t.native_id}/comm", "w") as f:
            f.write(t.name)
    before, t0 = thread_ticks(), time.perf_counter()
    go.set()
    time.sleep(0.4)
    after, wall = thread_ticks(), time.perf_counter() - t0
    stop.set()
    spinner.join(), sleeper.join()
    cores = threads_cpu(before, after, wall, top=50)
    assert cores["spinner-#"][1] == 1 and 0.3 <= cores["spinner-#"][0] <= 1.05, cores
    assert cores["sleeper-#"][0] <= 0.05, cores


def test_nvdec_plans_the_whole_run_where_its_open_files_fit(prepared, tmp_path, monkeypatch):  # noqa: ANN201
    """gpu_segment_clips=None: one plan up to the run's last epoch where every pipeline holding
    every video open fits in half the available host memory; 50,000 clips where it would not,
    or where the run has no known end."""
    import loader.gpu as gpu

    data = {"manifests": prepared.manifests, "shards": prepared.shards, "batch_size": 8,
            "num_threads": 2, "decode": "gpu", "cache_dir": tmp_path / "cache"}  # fmt: skip
    with ClipLoader(LoaderConfig(**data)) as loader:

        def backend(**kw: object) -> gpu.GpuBackend:
            return gpu.GpuBackend(LoaderConfig(**data, **kw), loader.dataset, loader.batches)

        whole = backend(gpu_last_epoch=5)
        try:
            assert whole.segment_clips == gpu.WHOLE_RUN
            assert len(whole._plan(0, loader.batches(0))) == 6  # epochs 0-5, nothing after
            assert whole.segment_report()["segment_clips"] == "whole run"
        finally:
            whole.close()
        endless = backend()  # no last epoch: no whole run to plan
        endless.close()
        assert endless.segment_clips == gpu.SEGMENT_CLIPS == 50_000
        monkeypatch.setenv("PADDLE_LOCAL_SIZE", str(10**9))  # a launcher's ranks on this host
        crowded = backend(gpu_last_epoch=5)
        crowded.close()
        assert crowded.segment_clips == gpu.SEGMENT_CLIPS
        monkeypatch.delenv("PADDLE_LOCAL_SIZE")
        crowded = backend(gpu_last_epoch=5, local_ranks=10**9)  # said, not read from the launcher
        crowded.close()
        assert crowded.segment_clips == gpu.SEGMENT_CLIPS
        with pytest.raises(ValueError, match="local_ranks must be >= 1"):
            LoaderConfig(**data, local_ranks=0)
        monkeypatch.setattr(gpu, "host_available_bytes", lambda: 10**6)  # 1 MB free
        short = backend(gpu_last_epoch=5)
        short.close()
        assert short.segment_clips == gpu.SEGMENT_CLIPS
        given = backend(gpu_last_epoch=5, gpu_segment_clips=7)
        given.close()
        assert given.segment_clips == 7


def test_hybrid_reports_the_share_its_batches_are_cut_with(prepared, tmp_path, caplog) -> None:
    """A fixed CPU share off the NVDEC chunk grid is cut to the nearest whole chunks, said once,
    and that is the share reported (0.3 of 8 clips in chunks of 4: 4 on NVDEC, so 0.5)."""
    from loader.hybrid import HybridBackend, gpu_clips

    assert gpu_clips(128, 0.125, 16) == 112 and gpu_clips(128, 0.1875, 16) == 96  # 6.5 -> 6
    assert gpu_clips(128, 0.99, 16) == 16  # at least one chunk stays on NVDEC
    cfg = LoaderConfig(manifests=prepared.manifests, shards=prepared.shards, batch_size=8,
                       num_threads=2, decode="hybrid", gpu_batch=4, cpu_share=0.3,
                       cache_dir=tmp_path / "cache")  # fmt: skip
    with ClipLoader(cfg) as loader, caplog.at_level("WARNING", logger="loader.hybrid"):
        be = HybridBackend(cfg, loader.dataset, loader.batches)
        try:
            assert be.share == 0.5 and be._share_of(0) == 0.5
            assert "share of 0.3 is cut as 0.5" in caplog.text
        finally:
            be.close()


def test_cpu_busy_steal_reads_the_machine_and_steal_pct_compares_two_readings() -> None:
    """loader.hostmem: /proc/stat's busy and stolen seconds only grow; steal_pct is the stolen
    share of the busy time between two readings, None where either is missing or nothing ran."""
    import time

    from loader.hostmem import cpu_busy_steal, steal_pct

    before = cpu_busy_steal()
    assert before is not None and before[0] > 0 and before[1] >= 0  # Linux CI
    t_end = time.perf_counter() + 0.2
    while time.perf_counter() < t_end:
        sum(range(10_000))
    after = cpu_busy_steal()
    assert after[0] >= before[0] and after[1] >= before[1]
    assert steal_pct((100.0, 1.0), (200.0, 6.0)) == 5.0
    assert steal_pct(None, after) is None and steal_pct((5.0, 0.0), (5.0, 0.0)) is None
