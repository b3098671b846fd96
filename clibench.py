"""ucf3d bench: the benchmark commands (prep, loader, feed, footage), each printing one line.

The commands are thin: the benchmarks themselves live in bench/ (which imports torch only for the
stand-in consumer); `cli.py` adds this group to `ucf3d`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from clikit import ffmpeg_option, jobs_option, library_errors


@click.group()
def bench() -> None:
    """Benchmarks: each prints one JSON line."""


@bench.command("prep")
@click.option("--scratch", type=click.Path(file_okay=False, path_type=Path),
              default=Path("/tmp/ucf3d-bench-prep"), show_default=True)
@click.option("--videos", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Real UCF-101/ videos (default: synthesize into --scratch).")
@click.option("--splits", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None)
@click.option("--classes", type=click.IntRange(1, 101), default=10, show_default=True)
@click.option("--groups", type=click.IntRange(8, 99), default=8, show_default=True)
@click.option("--seconds", type=click.FloatRange(0.8, 60), default=7.0, show_default=True)
@click.option("--codec", type=click.Choice(["vp9", "h264"]), default="vp9", show_default=True)
@click.option("--crf", type=click.IntRange(0, 63), default=None,
              help="Encoder quality for our route (default: extract's).")
@click.option("--repeats", type=click.IntRange(1, 20), default=1, show_default=True,
              help="Alternate the two routes this many times; report each one's fastest run.")
@jobs_option
@ffmpeg_option
@library_errors
def bench_prep(scratch: Path, videos: Path | None, splits: Path | None, classes: int, groups: int,
               seconds: float, codec: str, crf: int | None, repeats: int, jobs: int,
               ffmpeg: str | None) -> None:
    """extract+shard against per-frame JPEGs (the original code's route); one JSON line."""
    import json

    from bench.prep import BenchPrepConfig
    from bench.prep import bench_prep as run

    cfg = BenchPrepConfig(scratch, videos, splits, classes, groups, 1, seconds, jobs, codec,
                          repeats=repeats, crf=crf, ffmpeg=ffmpeg)
    click.echo(json.dumps(run(cfg)))


# ==== bench loader, bench feed, bench footage ================================================


def _loader_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """What `bench loader` and `bench feed` load, and how (LoaderConfig fields)."""
    options = [
        click.option("--split", type=click.IntRange(1, 3), required=True),
        click.option("--decode", type=click.Choice(["cpu", "gpu", "hybrid"]), default="cpu",
                     show_default=True),
        click.option("--batch-size", type=click.IntRange(1), default=128, show_default=True),
        click.option("--threads", type=click.IntRange(1), default=None,
                     help="DALI CPU threads (ours) or worker processes (baselines); default: all "
                     "cores."),
        click.option("--manifests", type=click.Path(exists=True, file_okay=False, path_type=Path),
                     default=Path("manifests"), show_default=True),
        click.option("--shards", type=click.Path(exists=True, file_okay=False, path_type=Path),
                     default=None, help="Default: the split summary's shards_dir."),
        click.option("--start-align", type=click.IntRange(1), default=1, show_default=True),
        click.option("--clip-size", type=click.IntRange(16), default=112, show_default=True),
        click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32",
                     show_default=True),
        click.option("--output", type=click.Choice(["float", "uint8"]), default=None,
                     help="What leaves DALI (default: uint8 when decoding on the GPU)."),
        click.option("--handover", type=click.Choice(["kernel", "ops"]), default="kernel",
                     show_default=True, help="GPU, uint8: normalise in one kernel per chunk, "
                     "or with the framework's ops (concatenate, transpose, cast, subtract)."),
        click.option("--gpu-resize", type=click.Choice(["auto", "dali", "kernel"]),
                     default="auto", show_default=True, help="GPU: who crops and resizes "
                     "NVDEC's frames: DALI's fn.resize, or the hand-over kernel as it normalises "
                     "(auto: the kernel where the clips leave DALI as uint8)."),
        click.option("--handover-stream", type=click.Choice(["step", "side", "rest"]),
                     default="step", show_default=True, help="GPU: run the hand-over kernel on "
                     "the step's stream before the step, or one batch ahead on a high-priority "
                     "stream of its own in the step's SM partition (side) or on the SMs it "
                     "leaves to the loader (rest)."),
        click.option("--prefetch", type=click.IntRange(1), default=2, show_default=True),
        click.option("--thread-ahead", type=click.IntRange(0), default=0, show_default=True,
                     help="Take DALI's outputs in a loader thread this many batches ahead "
                     "(0: in the consumer's thread)."),
        click.option("--loader-nice", type=click.IntRange(0, 19), default=0, show_default=True,
                     help="Run the loader's threads (every thread but the consumer's) at this "
                     "nice value, so the consumer keeps a core (0: leave them; Linux)."),
        click.option("--pipelines", type=click.IntRange(1), default=24,
                     show_default=True, help="GPU: concurrent NVDEC pipelines."),
        click.option("--gpu-batch", type=click.IntRange(1), default=16, show_default=True,
                     help="GPU: clips per pipeline iteration."),
        click.option("--gpu-threads", type=click.IntRange(1), default=2, show_default=True,
                     help="GPU: CPU threads per NVDEC pipeline."),
        click.option("--check-lag", type=click.IntRange(0), default=0, show_default=True,
                     help="GPU: check each chunk's plan lines this many chunks later (0: at once; "
                     "reading them waits for the chunk's GPU work)."),
        click.option("--cpu-share", type=click.FloatRange(0, 1, max_open=True), default=None,
                     help="hybrid: share of each batch decoded on the CPU (default: adapted)."),
        click.option("--segment-clips", type=click.IntRange(1), default=None,
                     help="GPU: clips planned ahead per set of NVDEC pipelines (default: 50,000; "
                     "the hybrid's adaptive share moves once per such plan)."),
        click.option("--lazy-init/--no-lazy-init", default=False, show_default=True,
                     help="GPU: NVDEC readers open their files on their first run, in their own "
                     "threads, not while DALI builds them holding Python's lock."),
        click.option("--pace", type=click.FloatRange(0, 10), default=0.05, show_default=True,
                     help="GPU: seconds between pipelines shut down or built in the background "
                     "(0: all at once)."),
        click.option("--cache", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="GPU: local video cache (default $UCF3D_CACHE, ~/.cache/ucf3d/videos)."),
    ]  # fmt: skip
    for option in reversed(options):
        fn = option(fn)
    return fn


def _bench_loader_config(opts: dict[str, Any]) -> Any:
    """Pop the _loader_options values from opts into a training-mode LoaderConfig."""
    import os

    from loader import LoaderConfig

    return LoaderConfig(
        manifests=opts.pop("manifests"), shards=opts.pop("shards"), split=opts.pop("split"),
        subset="train", mode="train", batch_size=opts.pop("batch_size"),
        decode=opts.pop("decode"), dtype=opts.pop("dtype"), output=opts.pop("output"),
        handover=opts.pop("handover"), gpu_resize=opts.pop("gpu_resize"),
        handover_stream=opts.pop("handover_stream"),
        size=opts.pop("clip_size"),
        num_threads=opts.pop("threads") or os.cpu_count() or 1,
        start_align=opts.pop("start_align"), prefetch=opts.pop("prefetch"),
        thread_ahead=opts.pop("thread_ahead"), loader_nice=opts.pop("loader_nice"),
        gpu_pipelines=opts.pop("pipelines"), gpu_batch=opts.pop("gpu_batch"),
        gpu_threads=opts.pop("gpu_threads"), gpu_check_lag=opts.pop("check_lag"),
        cpu_share=opts.pop("cpu_share"), gpu_segment_clips=opts.pop("segment_clips"),
        gpu_lazy_init=opts.pop("lazy_init"), gpu_pace_s=opts.pop("pace"),
        cache_dir=opts.pop("cache"),
    )  # fmt: skip


@bench.command("loader")
@_loader_options
@click.option("--baseline", type=click.Choice(["ours", "jpeg", "pyav"]), default="ours",
              show_default=True, help="jpeg/pyav: Hara-style JPEG frames or PyAV on the AVIs.")
@click.option("--seconds", type=click.FloatRange(1), default=20.0, show_default=True)
@click.option("--warmup", type=click.FloatRange(0), default=5.0, show_default=True)
@click.option("--videos", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Source UCF-101/ (<Class>/<key>.avi): needed by the baselines.")
@library_errors
def bench_loader(baseline: str, seconds: float, warmup: float, videos: Path | None,
                 **opts: Any) -> None:
    """Training-loader throughput alone (full Hara augmentation) after a warm-up; one JSON line."""
    import json

    from bench.loader import BenchConfig, run_bench

    if baseline != "ours" and videos is None:
        raise click.BadParameter("the jpeg and pyav baselines need --videos", param_hint="--videos")
    lcfg = _bench_loader_config(opts)
    cfg = BenchConfig(lcfg, baseline, seconds, warmup, videos, workers=lcfg.num_threads)
    click.echo(json.dumps(run_bench(cfg)))


@bench.command("feed")
@_loader_options
@click.option("--consumer", type=click.Choice(["auto", "paddle", "torch"]), default="auto",
              show_default=True, help="The training step: the project's Paddle step, or (GPU "
              "machines without a CUDA Paddle) a PyTorch R3D-18 stand-in; auto picks.")
@click.option("--device", type=click.Choice(["gpu", "cpu"]), default="gpu", show_default=True)
@click.option("--model", default="r3d18", show_default=True,
              help="Paddle consumer: any `ucf3d train --model` name (tiny for CPU runs).")
@click.option("--amp", type=click.Choice(["none", "fp16", "bf16"]), default="bf16",
              show_default=True)
@click.option("--seconds", type=click.FloatRange(1), default=30.0, show_default=True)
@click.option("--warmup", type=click.FloatRange(0), default=15.0, show_default=True)
@click.option("--unfed-seconds", type=click.FloatRange(1), default=None,
              help="Time the step alone for this long (default: --seconds).")
@click.option("--in-flight", type=click.IntRange(1), default=2, show_default=True,
              help="Steps queued on the device before the host waits.")
@click.option("--stream", type=click.Choice(["side", "high", "default"]), default="side",
              show_default=True, help="side: steps on a non-blocking stream (as ucf3d train); "
              "high: the same at high priority (ucf3d train --step-stream high).")
@click.option("--graph", is_flag=True, help="PyTorch stand-in: CUDA-graph the step.")
@click.option("--cuda-sync", type=click.Choice(["auto", "spin", "yield", "blocking"]),
              default="auto", show_default=True,
              help="How host threads wait for the GPU (the CUDA context's scheduling flag; "
              "blocking frees cores but fed the step worse on an H200: docs/BENCHMARKS.md).")
@click.option("--loader-sms", type=click.IntRange(0), default=None, show_default="auto",
              help="GPU: run the fed steps on all but N SMs (a CUDA green context), leaving N to "
              "the loader's kernels; the step alone is timed there too. 0: every SM; auto: as "
              "ucf3d train (2 with NVDEC decoding).")
@click.option("--sm-split", type=click.Choice(["aligned", "fine"]), default="fine",
              show_default=True, help="--loader-sms: SM by SM (as ucf3d train), or in the GPU's "
              "partition granularity (8 SMs on Hopper; keeps wide thread-block clusters).")
@click.option("--unfed-cache", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON file of the step-alone figures: reuse them when this step (same model, "
              "batch, partition, timing...) was measured before, else measure and add them.")
@click.option("--keep-last", is_flag=True,
              help="Keep each epoch's last, partial batch (by default it is dropped, so that every "
              "fed step has --batch-size clips, like the step alone).")
@click.option("--profile-steps", type=click.IntRange(0), default=0, show_default=True,
              help="PyTorch stand-in: after the timed window, profile N more fed steps and add "
              "`kernels` (the step's stream against the loader's, per step) to the line.")
@click.option("--gil-probe/--no-gil-probe", default=True, show_default=True,
              help="Time Python's lock with a thread that wakes every 5 ms (off: no such thread; "
              "garbage collections are timed either way), to see whether it stalls training.")
@click.option("--gc-census", is_flag=True,
              help="Diagnosis: free nothing Python finds in a reference cycle during the run "
              "and count those objects by type in the line (`gil.census`): what the fed loop "
              "makes cycles of.")
@click.option("--profile-trace", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --profile-steps: also keep the profiled steps' whole trace in this file "
              "(gzipped Chrome trace JSON).")
@library_errors
def bench_feed(keep_last: bool, **opts: Any) -> None:
    """Training step alone vs fed by the loader, same device, same process; one JSON line."""
    import dataclasses
    import json

    from bench.feed import FeedConfig, run_feed
    from loader.config import clips_on_for

    lcfg = _bench_loader_config(opts)  # clips handed over where the step runs, as in train
    lcfg = dataclasses.replace(lcfg, clips_on=clips_on_for(opts["device"], lcfg.decode),
                               drop_last=not keep_last)  # fmt: skip
    opts["sm_fine"] = opts.pop("sm_split") == "fine"
    click.echo(json.dumps(run_feed(FeedConfig(lcfg, **opts))))


@bench.command("footage")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--source", "sources", multiple=True, required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A camera video to cut clips from (repeatable).")
@click.option("--classes", type=click.IntRange(1, 101), default=12, show_default=True)
@click.option("--groups", type=click.IntRange(8, 99), default=25, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@jobs_option
@library_errors
def bench_footage(out: Path, sources: tuple[Path, ...], classes: int, groups: int, seed: int,
                  jobs: int | None) -> None:
    """Real footage for benchmarks: UCF-101-shaped clips cut from camera videos."""
    from bench.footage import FootageConfig, footage

    r = footage(FootageConfig(sources, out, classes, groups, seed=seed, jobs=jobs or None))
    click.echo(f"footage: {r['videos']} clips of {r['classes']} classes -> {out}")
