"""bench feed: does the loader keep a training step fed? The step alone, then fed, same process.

1. unfed: the training step again and again on one batch already in the device's memory (what the
   device can consume);
2. fed: the same step on batches from `ClipLoader`, on the same device, in the same process.

The figure that counts is fed / unfed. The consumer is the project's own Paddle step
(train.loop.train_step) where Paddle can run on the device; on a GPU machine without a CUDA build
of Paddle, a PyTorch R3D-18 of the same layout (Hara's: conv1 7x7x7 stride (1, 2, 2), BasicBlock
[2, 2, 2, 2]; bf16 autocast, channels-last) stands in, and the result says so. torch is imported
only here and is not a dependency.

Both phases run the same loop: at most `in_flight` steps queued on the device (the host waits for
the step before last, as a loop that reads its loss late does), data wait = time the host spends
blocked in the loader (its DLPack hand-over and normalisation included). Both step on batches of
the same size: `ucf3d bench feed` drops each epoch's last, partial batch (`--keep-last` keeps it).
On UCF-101 that batch is 1 step in 75; on a small benchmark set it can be every other step (216
clips: 128 + 88), and a smaller step makes fewer clips/s whatever feeds it. The steps run on a
non-blocking stream of their own (`stream="side"`, as `ucf3d train` does; "default" reproduces the
first measurements: see docs/BENCHMARKS.md). With `loader_sms`, the fed steps run on a green
context holding all but that many SMs (loader.greenctx), and the step alone is timed there too
("unfed_partitioned"); the ratio stays against the step alone on the whole device. On the GPU it
asks CUDA for 32 hardware work queues, as `ucf3d train` does (loader.workqueues), unless
CUDA_DEVICE_MAX_CONNECTIONS is set; `CUDA_DEVICE_MAX_CONNECTIONS=8` measures as the rounds before
the eighth did ("cuda_work_queues" in the line says which).

A sweep spends half its device time on the step alone, which only the step's settings change.
With `unfed_cache` (a JSON file), a run whose step settings were measured before reuses those
figures and says so (`unfed_reused`: the file, and when they were measured); the step still runs
alone for a few seconds first, so cuDNN picks its kernels as in a full run.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from bench.feedloop import run_steps, timed
from bench.measure import GilProbe, GpuSampler, gpu_name
from loader import ClipLoader, LoaderConfig
from loader.greenctx import STEP_STREAMS
from loader.hostmem import STEAL_WARN_PCT

log = logging.getLogger(__name__)

CONSUMERS = ("auto", "paddle", "torch")
STREAMS = STEP_STREAMS


@dataclass(frozen=True)
class FeedConfig:
    loader: LoaderConfig  # data, batch size, decode path and its settings
    consumer: str = "auto"  # auto: paddle where it has CUDA (or on a CPU run), else torch
    device: str = "gpu"  # where the step runs: gpu | cpu (cpu: tests, tiny models)
    model: str = "r3d18"  # Paddle consumer: any train.models name; torch stand-in: R3D-18 only
    amp: str = "bf16"  # none | fp16 | bf16 (GPU)
    seconds: float = 30.0
    warmup: float = 15.0  # seconds discarded at the start of each phase (pipelines, cudnn)
    unfed_seconds: float | None = None  # the step alone for this long (None: `seconds`)
    in_flight: int = 2
    stream: str = "side"
    graph: bool = False  # torch stand-in: CUDA-graph the step
    cuda_sync: str = "auto"  # how waiting host threads wait for the GPU (loader.cudasync)
    # GPU: fed steps on all but these SMs (loader.greenctx); 0 = every SM; None = as ucf3d train
    # chooses (loader.greenctx.default_loader_sms)
    loader_sms: int | None = None
    sm_fine: bool = True  # split SM by SM (as ucf3d train), not in the GPU's granularity
    # a JSON file of unfed figures by step settings: a run whose step was measured alone before
    # (same settings, e.g. earlier in a sweep) reuses them instead of measuring them again
    unfed_cache: Path | None = None
    # after the timed window, this many fed steps under the profiler (bench.kernels; stand-in)
    profile_steps: int = 0
    profile_trace: Path | None = None  # where to keep the profiled steps' whole trace (.json.gz)
    # a thread waking every 5 ms to time Python's lock (bench.measure.GilProbe); off: none, to see
    # whether that thread's own turns at the lock stall the training thread
    gil_probe: bool = True
    gc_census: bool = False  # keep what reference cycles hold and count it by type (GilProbe)

    def __post_init__(self) -> None:
        if self.consumer not in CONSUMERS or self.stream not in STREAMS:
            raise ValueError(f"consumer must be one of {CONSUMERS}, stream one of {STREAMS}")
        if self.device not in ("gpu", "cpu") or self.in_flight < 1 or self.profile_steps < 0:
            raise ValueError("device must be gpu or cpu, in_flight >= 1, profile_steps >= 0")
        on_side_gpu = self.device == "gpu" and self.stream != "default"
        if self.loader_sms is not None and (
            self.loader_sms < 0 or (self.loader_sms and not on_side_gpu)
        ):
            raise ValueError("loader_sms must be >= 0, and 0 off the GPU or on the default stream")

    def steps_loader_sms(self) -> int:
        """loader_sms, or what `ucf3d train` would choose for this device and decode path."""
        from loader.greenctx import default_loader_sms

        if self.loader_sms is not None:
            return self.loader_sms
        return default_loader_sms(self.device, self.loader.decode, self.stream)


@dataclass
class Consumer:
    """A training step and what the timing loop needs around it."""

    name: str
    step: Callable[[Any, Any], None]  # (clips, labels) on the device
    fence: Callable[[], Callable[[], None]]  # mark the queue; the returned call waits for it
    # (loader, epochs) -> (x, y) of those epochs' batches, one epoch after the other
    batches: Callable[[ClipLoader, Iterable[int]], Iterator[tuple[Any, Any]]]
    fixed: tuple[Any, Any]  # one resident batch for the unfed phase
    stream: Callable[[int], Any]  # (loader_sms) -> context manager: the steps on their stream
    partition: Callable[[], dict] = dict  # the SM partition in use: {"train_sms", "device_sms"}
    # GPU: a timing event recorded on the current stream (has .elapsed_time(later) in ms)
    mark: Callable[[], Any] | None = None
    # (run: queues and finishes the steps, steps) -> bench.kernels.summarize of what ran
    profile: Callable[[Callable[[], None], int], dict] | None = None


def run_feed(cfg: FeedConfig) -> dict:
    """Measure unfed and fed; the dict is what `ucf3d bench feed` prints as one JSON line."""
    from loader.cudasync import set_schedule
    from loader.greenctx import unavailable
    from loader.workqueues import widen

    lc = cfg.loader
    # as ucf3d train does; before any CUDA context, the step-alone child's included
    queues = widen(lc.gpu_device()) if cfg.device == "gpu" else "cpu"
    loader = ClipLoader(lc)  # reads the manifest and shards now; decoding starts in the fed phase
    if not len(loader):  # the fed phase would wait for ever on empty epochs
        raise ValueError(
            f"{lc.manifests}: split {lc.split} {lc.subset} has no full batch of "
            f"{lc.batch_size} clips to feed (use a smaller --batch-size, or --keep-last)"
        )
    auto = cfg.loader_sms is None
    cfg = replace(cfg, loader_sms=cfg.steps_loader_sms())
    why_not = unavailable() if auto and cfg.loader_sms else None
    if why_not:  # as ucf3d train does: the whole GPU, said so
        log.warning("steps on every SM: %s", why_not)
        cfg = replace(cfg, loader_sms=0)
    alone = replace(cfg, seconds=cfg.unfed_seconds or cfg.seconds)  # the unfed phase's timing
    key = _unfed_key(alone, queues)
    cached = _read_cache(cfg.unfed_cache).get(key) if cfg.unfed_cache else None
    whole = cached["unfed"] if cached else None
    if whole is None and cfg.loader_sms:
        whole = _unfed_apart(alone)  # before this process uses the GPU
    sync = set_schedule(cfg.cuda_sync, cfg.loader.gpu_device()) if cfg.device == "gpu" else "cpu"
    consumer = _consumer(cfg)  # creates the CUDA context: after set_schedule
    if cfg.profile_steps and consumer.profile is None:
        raise ValueError(f"--profile-steps: {consumer.name} has no profiler (the stand-in has)")
    result: dict[str, Any] = {
        "bench": "feed",
        "consumer": consumer.name,
        "device": gpu_name() if cfg.device == "gpu" else "cpu",
        "cpu_count": os.cpu_count(),
        "model": cfg.model,
        "amp": cfg.amp,
        "stream": cfg.stream,
        "graph": cfg.graph,
        "in_flight": cfg.in_flight,
        "cuda_sync": sync,
        "cuda_work_queues": queues,  # CUDA_DEVICE_MAX_CONNECTIONS (loader.workqueues)
        "loader": {**lc.to_dict(), "output": lc.clip_output()},
        # who normalised the clips: the hand-over kernel, the framework's ops (asked for, fallen
        # back to, or on the CPU), or DALI
        "handover": _handover(cfg),
    }
    if why_not:
        result["loader_sms_unavailable"] = why_not
    if cached:  # the step still runs alone first, so cuDNN picks its kernels as in a full run
        _unfed(replace(cfg, seconds=REUSE_WARM_S, warmup=REUSE_WARM_S), consumer, cfg.loader_sms)
        result["unfed_reused"] = {"from": str(cfg.unfed_cache), "measured": cached["measured"]}
    if whole is None:
        whole = _unfed(alone, consumer, 0)
    result["unfed"] = whole  # the step alone on the whole device: what the ratio is against
    if cfg.loader_sms:  # what the partition alone costs
        part = cached["unfed_partitioned"] if cached else _unfed(alone, consumer, cfg.loader_sms)
        result["unfed_partitioned"] = part
        result["loader_sms"] = {"asked": cfg.loader_sms, "auto": auto, "fine": cfg.sm_fine,
                                **consumer.partition()}  # fmt: skip
    if cfg.unfed_cache and not cached:
        _write_cache(cfg.unfed_cache, key, result)
    period_s = GilProbe.PERIOD_S if cfg.gil_probe else None  # None: no probe thread
    probe = GilProbe(period_s, census=cfg.gc_census)
    with consumer.stream(cfg.loader_sms), loader, GpuSampler() as gpu, probe as gil:
        batches = _epochs(loader, consumer)
        fed = timed(batches, consumer, cfg.seconds, cfg.warmup, cfg.in_flight)
        t0 = fed.pop("_t0")
        fed["gil"] = gil.summary(t0, t0 + fed["wall_s"])  # Python's lock held by native code
        sampled = gpu.summary()  # the timed window's (the profiled steps come after it)
        if cfg.profile_steps and consumer.profile is not None:
            run = partial(run_steps, batches, consumer, cfg.profile_steps, cfg.in_flight)
            fed["kernels"] = consumer.profile(run, cfg.profile_steps)
        fed.update(hybrid_report(loader.backend))
        fed.update(nvdec_report(loader.backend, t0))
    result["fed"] = {**fed, **sampled}
    result["fed_vs_unfed"] = round(fed["clips_per_s"] / whole["clips_per_s"], 3)
    _warn_if_stolen(fed["host_taken"])
    return result


def _warn_if_stolen(taken: dict[str, float]) -> None:
    """Say so when the hypervisor took a noticeable share of the machine's CPU time during the fed
    window: the training thread stands still while its virtual CPU is not running, and the ratio
    then measures the machine as much as the loader."""
    pct = taken.get("steal_pct", 0.0)
    if pct >= STEAL_WARN_PCT:
        log.warning("the hypervisor took %.1f %% of this machine's busy CPU time (%.1f s) while "
                    "fed: stalls in this window are the machine's, not the loader's (compare "
                    "fed.host_taken across runs)", pct, taken.get("steal_s", 0.0))  # fmt: skip


def hybrid_report(backend: Any) -> dict[str, Any]:
    """A hybrid backend's waits on each path (warm-up included) and its shares (share -> epochs
    planned with it); nothing for the other backends."""
    waited = getattr(backend, "waited", None)
    if waited is None:
        return {}
    shares = Counter(backend.shares.values())
    return {"hybrid_wait_s": {k: round(v, 2) for k, v in waited.items()},
            "hybrid_shares": {f"{share:g}": n for share, n in sorted(shares.items())}}  # fmt: skip


def nvdec_report(backend: Any, origin: float | None = None) -> dict[str, Any]:
    """The NVDEC segments' cost (loader.gpu: each one built, the consumer's time at the boundaries,
    the background shut-downs; warm-up included; with `origin`, when each happened, in seconds
    from it) for the GPU and hybrid backends; else nothing."""
    gpu = getattr(backend, "gpu", backend)  # the hybrid's NVDEC part
    report = getattr(gpu, "segment_report", None)
    if report is None:
        return {}
    # who cropped and resized the frames: DALI, or the hand-over kernel (gpu_resize)
    return {"nvdec_segments": report(origin), "resize": gpu.resize}


REUSE_WARM_S = 2.0  # the step alone before a run that reuses cached unfed figures


def _unfed_key(cfg: FeedConfig, queues: str) -> str:
    """Everything the step alone depends on (not the loader's decode settings); `queues`: the
    work queues in force (what widen() returned, "cpu" off the GPU)."""
    lc = cfg.loader
    return json.dumps({
        "device": gpu_name() if cfg.device == "gpu" else "cpu", "consumer": cfg.consumer,
        "model": cfg.model, "amp": cfg.amp, "graph": cfg.graph, "stream": cfg.stream,
        # the graph is captured on the stream it runs on (since 10532fc; before, on the side
        # stream, where it ran on every SM): figures cached before that are not reused
        "capture": "on its stream" if cfg.graph else None,
        "in_flight": cfg.in_flight, "cuda_sync": cfg.cuda_sync, "loader_sms": cfg.loader_sms,
        "work_queues": queues,
        "sm_fine": cfg.sm_fine, "seconds": cfg.seconds, "warmup": cfg.warmup,
        "batch_size": lc.batch_size, "clip_len": lc.clip_len, "size": lc.size,
        "dtype": lc.dtype,
    }, sort_keys=True)  # fmt: skip


def _read_cache(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not an unfed cache ({e}); delete it to measure again") from e


def _write_cache(path: Path, key: str, result: dict) -> None:
    cache = _read_cache(path)
    cache[key] = {"unfed": result["unfed"], "unfed_partitioned": result.get("unfed_partitioned"),
                  "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(cache, indent=1))
    tmp.replace(path)


def _unfed(cfg: FeedConfig, consumer: Consumer, loader_sms: int) -> dict:
    with consumer.stream(loader_sms), GpuSampler() as gpu:
        unfed = timed(_repeat(consumer.fixed), consumer, cfg.seconds, cfg.warmup, cfg.in_flight)
        del unfed["_t0"]
    return {**unfed, **gpu.summary()}


def _unfed_apart(cfg: FeedConfig) -> dict:
    """The step alone on the whole device, measured in a child process.

    Kernel choices are cached per process (cuDNN's autotuning, keyed by shapes, not by SMs):
    chosen on the whole GPU, some cannot launch on a partition (thread-block clusters wider than
    it); chosen on the partition, they may be slower on the whole GPU. Each side is measured with
    its own choices.
    """
    import multiprocessing

    whole = replace(cfg, loader_sms=0)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        result = pool.apply(_unfed_alone, (whole,))
    return {**result, "process": "separate (own kernel choices)"}


def _unfed_alone(cfg: FeedConfig) -> dict:
    from loader.cudasync import set_schedule

    set_schedule(cfg.cuda_sync, cfg.loader.gpu_device())
    return _unfed(cfg, _consumer(cfg), 0)


def _repeat(batch: tuple[Any, Any]) -> Iterator[tuple[Any, Any]]:
    while True:
        yield batch


def _epochs(loader: ClipLoader, consumer: Consumer) -> Iterator[tuple[Any, Any]]:
    return consumer.batches(loader, itertools.count())


def _handover(cfg: FeedConfig) -> str:
    from loader.handover import use_kernel

    if cfg.loader.clip_output() != "uint8":
        return "dali"  # normalised there ("float" output)
    if cfg.device != "gpu":
        return "ops"
    return "kernel" if use_kernel(cfg.loader.handover) else "ops"


def _consumer(cfg: FeedConfig) -> Consumer:
    kind = cfg.consumer
    if kind == "auto":
        kind = "paddle" if cfg.device == "cpu" or _paddle_has_cuda() else "torch"
    if kind == "paddle":
        from bench.feed_paddle import paddle_consumer

        return paddle_consumer(cfg)
    try:
        from bench.feed_torch import torch_consumer

        return torch_consumer(cfg)
    except ImportError as e:  # torch is no dependency of the project
        raise RuntimeError(f"the PyTorch stand-in consumer needs PyTorch ({e})") from e


def _paddle_has_cuda() -> bool:
    try:
        import paddle
    except ImportError:
        return False
    return paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
