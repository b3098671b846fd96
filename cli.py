"""ucf3d command line: a thin click shell over prep, loader and train (one library call each)."""

from __future__ import annotations

import functools
import logging
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

log = logging.getLogger("ucf3d")


def progress_bar(desc: str, total: int | None = None) -> Callable[[int], None] | None:
    """A tqdm-backed progress callback when stderr is a terminal, else None (library logs)."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="video", leave=False)

    def update(n: int = 1, total: int | None = None) -> None:
        if total is not None and bar.total != total:
            bar.total = total
            bar.refresh()
        bar.update(n)

    return update


def library_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Library errors become `Error: ...` and exit 1; --debug shows the traceback instead."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (click.ClickException, click.Abort, SystemExit):
            raise
        except ImportError as e:  # no Paddle (train.install's one-line message); others: a bug
            if e.name != "paddle" or click.get_current_context().find_root().obj.get("debug"):
                raise
            raise click.ClickException(str(e)) from e
        except KeyboardInterrupt as e:  # Ctrl-C: the shell convention, 128 + SIGINT
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # more Ctrl-Cs: no traceback mid-exit
            if click.get_current_context().find_root().obj.get("debug"):
                traceback.print_exc()
            click.echo(f"Interrupted{': ' + str(e) if str(e) else '.'}", err=True)
            sys.exit(130)
        except (OSError, ValueError, RuntimeError) as e:
            if click.get_current_context().find_root().obj.get("debug"):
                raise
            raise click.ClickException(_rank_prefix() + str(e)) from e

    return wrapper


def _rank_prefix() -> str:
    """`rank R of W: ` under paddle.distributed.launch (one error line per rank), else nothing."""
    import os

    world = int(os.environ.get("PADDLE_TRAINERS_NUM", 1))
    return f"rank {os.environ.get('PADDLE_TRAINER_ID', 0)} of {world}: " if world > 1 else ""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ucf3d", message="ucf3d %(version)s")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """ucf3d: 3D CNNs for action recognition on UCF-101 with PaddlePaddle and NVIDIA DALI."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


@main.group()
def bench() -> None:
    """Benchmarks: each prints one JSON line."""


# ==== prep commands (synth, extract, shard, bench prep) ======================================

_SIZE_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "KI": 2**10, "MI": 2**20, "GI": 2**30}


class ByteSize(click.ParamType):
    """64MB, 500k, 1GiB or a plain number of bytes."""

    name = "size"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int):
            return value
        import re

        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?[iI]?)[bB]?\s*", str(value))
        if not m or m.group(2).upper() not in _SIZE_UNITS:
            self.fail(f"{value!r} is not a size like 64MB, 500k or 1GiB", param, ctx)
        return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).upper()])


class Finite(click.FloatRange):
    """A float range that also refuses nan and inf (which FloatRange lets through)."""

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        import math

        v = super().convert(value, param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return v


_existing_dir = click.Path(exists=True, file_okay=False, path_type=Path)
_ffmpeg_option = click.option(
    "--ffmpeg", envvar="UCF3D_FFMPEG", default=None, metavar="PATH",
    help="ffmpeg binary (default: $UCF3D_FFMPEG, else the one imageio-ffmpeg ships).",
)  # fmt: skip
_jobs_option = click.option(
    "--jobs", "-j", type=click.IntRange(0), default=0, show_default=True,
    help="Parallel ffmpeg processes (0: all cores).",
)  # fmt: skip


_dataset_option = click.option(
    "--dataset", type=click.Choice(["ucf101", "hmdb51"]), default="ucf101", show_default=True,
    help="hmdb51: HMDB-51's layout (<class>/<video>.avi) and <class>_test_split<N>.txt lists.",
)  # fmt: skip


@main.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@_dataset_option
@click.option("--classes", type=click.IntRange(1, 101), default=10, show_default=True)
@click.option("--groups", type=click.IntRange(1, 99), default=25, show_default=True)
@click.option("--clips", type=click.IntRange(1, 99), default=1, show_default=True,
              help="Clips per group and class.")
@click.option("--seconds", type=click.FloatRange(0.8, 60), default=3.0, show_default=True,
              help="Mean clip length (each is 0.7x-1.3x this).")
@click.option("--seed", type=int, default=0, show_default=True)
@_jobs_option
@_ffmpeg_option
@library_errors
def synth(out: Path, dataset: str, classes: int, groups: int, clips: int, seconds: float,
          seed: int, jobs: int, ffmpeg: str | None) -> None:
    """Write a synthetic UCF-101 or HMDB-51 (classes differ only by motion) under OUT."""
    from prep.synth import SynthConfig
    from prep.synth import synth as run

    cfg = SynthConfig(out, classes, groups, clips, seconds, seed, jobs, ffmpeg, dataset)
    res = run(cfg, progress_bar("synth"))
    click.echo(f"synth: {res['videos']} videos of {res['classes']} classes "
               f"({res['frames']} frames) in {out}")


@main.command()
@_dataset_option
@click.option("--videos", required=True, type=_existing_dir,
              help="The unpacked UCF-101/ (or hmdb51_org/) directory (<Class>/<video>.avi).")
@click.option("--splits", required=True, type=_existing_dir,
              help="ucfTrainTestlist/ (classInd.txt, trainlist0N.txt, testlist0N.txt), or "
                   "HMDB-51's testTrainMulti_7030_splits/.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Work directory (videos/, index.jsonl, errors.jsonl).")
@click.option("--codec", type=click.Choice(["vp9", "h264"]), default="vp9", show_default=True)
@click.option("--short-side", type=click.IntRange(16, 4096), default=128, show_default=True)
@click.option("--fps", type=click.IntRange(1, 240), default=25, show_default=True)
@click.option("--gop", type=click.IntRange(1, 1000), default=8, show_default=True,
              help="Keyframe interval in frames (closed GOPs); 8 keeps NVDEC fed with random "
                   "clip starts (docs/BENCHMARKS.md), 16 saves ~20% disk.")
@click.option("--crf", type=click.IntRange(0, 63), default=None,
              help="Encoder quality, lower is better (default: 40 for vp9, 23 for h264).")
@_jobs_option
@click.option("--strict", is_flag=True, help="Exit 1 if any listed video could not be prepared.")
@_ffmpeg_option
@library_errors
def extract(dataset: str, videos: Path, splits: Path, out: Path, codec: str, short_side: int,
            fps: int, gop: int, crf: int | None, jobs: int, strict: bool,
            ffmpeg: str | None) -> None:
    """Re-encode every video of the official split lists to the training format (resumable)."""
    from prep.extract import ExtractConfig
    from prep.extract import extract as run

    cfg = ExtractConfig(videos, splits, out, codec, short_side, fps, gop, crf, jobs, strict, ffmpeg,
                        dataset)
    res = run(cfg, progress_bar("extract"))
    click.echo(f"extract: {res.prepared} videos prepared ({res.encoded} encoded, {res.skipped} "
               f"already done), {res.errors} errors -> {out}")


@main.command()
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="extract's work directory (required unless --verify).")
@click.option("--split", required=True, type=click.IntRange(1, 3), help="Official split 1, 2 or 3.")
@click.option("--shards", "shards_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("shards"), show_default=True)
@click.option("--manifests", type=click.Path(file_okay=False, path_type=Path),
              default=Path("manifests"), show_default=True)
@click.option("--shard-size", type=ByteSize(), default="64MB", show_default=True,
              help="Target shard size.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sample-order shuffle seed.")
@click.option("--verify", is_flag=True,
              help="Only re-read the split's shards against its manifests; exit 1 on a mismatch.")
@library_errors
def shard(work: Path | None, split: int, shards_dir: Path, manifests: Path, shard_size: int,
          seed: int, verify: bool) -> None:
    """Write webdataset shards (stored once for all splits) and split N's manifests."""
    if verify:
        from prep.verify import verify as run_verify

        problems = run_verify(manifests, split, progress_bar("verify"))
        for p in problems:
            click.echo(p, err=True)
        if problems:
            raise click.ClickException(f"split {split}: {len(problems)} mismatch(es) in the shards")
        click.echo(f"verify: split {split} shards match their manifests ({manifests})")
        return
    if work is None:
        raise click.UsageError("--work is required (unless --verify)")
    from prep.shard import ShardConfig
    from prep.shard import shard as run

    cfg = ShardConfig(work, split, shards_dir, manifests, shard_size, seed)
    s = run(cfg, progress_bar("shard"))
    sub = s["subsets"]
    click.echo(f"shard: split {split}: {sub['train']['videos']} train / "
               f"{sub['test']['videos']} test videos in {len(s['shards'])} shards "
               f"({s['written']} written) -> {shards_dir}, {manifests}"
               + (f"; {len(s['warnings'])} warning(s), see above" if s["warnings"] else ""))


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
@_jobs_option
@_ffmpeg_option
@library_errors
def bench_prep(scratch: Path, videos: Path | None, splits: Path | None, classes: int, groups: int,
               seconds: float, codec: str, crf: int | None, repeats: int, jobs: int,
               ffmpeg: str | None) -> None:
    """extract+shard vs. per-frame JPEGs (the original code's route); prints one JSON line."""
    import json

    from bench.prep import BenchPrepConfig
    from bench.prep import bench_prep as run

    cfg = BenchPrepConfig(scratch, videos, splits, classes, groups, 1, seconds, jobs, codec,
                          repeats=repeats, crf=crf, ffmpeg=ffmpeg)
    click.echo(json.dumps(run(cfg)))


# ==== benchmark commands (bench loader, bench feed, bench footage) ============================


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
@_jobs_option
@library_errors
def bench_footage(out: Path, sources: tuple[Path, ...], classes: int, groups: int, seed: int,
                  jobs: int | None) -> None:
    """Real footage for benchmarks: UCF-101-shaped clips cut from camera videos."""
    from bench.footage import FootageConfig, footage

    r = footage(FootageConfig(sources, out, classes, groups, seed=seed, jobs=jobs or None))
    click.echo(f"footage: {r['videos']} clips of {r['classes']} classes -> {out}")


# ==== train commands (train, eval, export, predict) ===========================================

_DEPTHS = ("10", "18", "34", "50", "101", "152", "200")


def _given(ctx: click.Context, name: str) -> bool:
    src = ctx.get_parameter_source(name)
    return src is not None and src != click.core.ParameterSource.DEFAULT


def _scales(ctx: click.Context, param: click.Parameter, value: str | None) -> list[float] | None:
    """--scales 1,0.84,0.71: crop sides as fractions of the short side, each in (0, 1]."""
    if value is None:
        return None
    try:
        scales = [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        scales = []
    if not scales or not all(0 < v <= 1 for v in scales):
        raise click.BadParameter(f"{value!r} is not a list of scales in (0, 1], like 1,0.84,0.71")
    return scales


@main.command()
@click.option("--model", "model_name", default="r3d18", show_default=True,
              help="r3d10 ... r3d200, or tiny (R3D-10 layout at widths 8-16-32-64, for demos).")
@click.option("--depth", type=click.Choice(_DEPTHS),
              help="Shorthand for --model r3d<DEPTH> (default: --model's).")
@click.option("--shortcut", type=click.Choice(["A", "A-hara", "B"]),
              help="Residual shortcut: A (zero-padded identity, gradient flows through it, He et "
                   "al.), A-hara (the same without gradient, as in Hara's code; default up to "
                   "depth 34) or B (1x1x1 conv, default from 50).")
@click.option("--width", type=click.IntRange(1),
              help="Base width w: stages w-2w-4w-8w (default: the model's; paper 64, tiny 8).")
@click.option("--split", type=click.IntRange(1, 3), default=1, show_default=True)
@click.option("--manifests", type=click.Path(file_okay=False, path_type=Path), default="manifests",
              show_default=True, help="`ucf3d shard`'s manifests folder (stored absolute).")
@click.option("--shards", type=click.Path(file_okay=False, path_type=Path),
              help="Default: the split summary's shards_dir (where `ucf3d shard` wrote them).")
@click.option("--clip-size", type=click.IntRange(32), default=112, show_default=True,
              help="Spatial crop S of the 16xSxS clips.")
@click.option("--batch-size", type=click.IntRange(1), default=128, show_default=True)
@click.option("--lr", type=Finite(0, min_open=True), default=0.01, show_default=True,
              help="Paddle Momentum lr. Hara's 0.1 with PyTorch dampening 0.9 is 0.01 here: "
              "Paddle has no dampening, and lr*(1-0.9) gives the same update.")
@click.option("--momentum", type=Finite(0, 1, max_open=True), default=0.9, show_default=True)
@click.option("--weight-decay", type=Finite(0), default=1e-3, show_default=True)
@click.option("--schedule", type=click.Choice(["plateau", "multistep"]), default="plateau",
              show_default=True, help="plateau: lr x0.1 when val loss stalls --patience epochs.")
@click.option("--patience", type=click.IntRange(0), default=10, show_default=True)
@click.option("--milestones", default="", help="Comma-separated epochs for --schedule multistep.")
@click.option("--epochs", type=click.IntRange(1), default=200, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True)
@click.option("--decode", type=click.Choice(["cpu", "gpu", "hybrid"]), default="cpu",
              show_default=True, help="Clip decoding: CPU threads, NVDEC, or NVDEC plus CPU "
              "threads decoding a share of every batch (--cpu-share).")
@click.option("--cpu-share", type=click.FloatRange(0, 1, max_open=True),
              help="--decode hybrid: the share of each batch the CPU decodes (default: adapted).")
@click.option("--pipelines", "gpu_pipelines", type=click.IntRange(1),
              help="NVDEC decoding: concurrent pipelines (default: 24; 48 fed short side 240 "
              "better on an H200, docs/BENCHMARKS.md).")
@click.option("--segment-clips", "gpu_segment_clips", type=click.IntRange(1),
              help="NVDEC decoding: clips planned ahead per set of pipelines. Default: the whole "
              "run in one plan where every pipeline keeping every video open fits in half the "
              "available host memory (~21 GB with 24 pipelines on UCF-101, estimated), else "
              "50,000. Each change of set costs the training ~1-2 s on an H200 "
              "(docs/BENCHMARKS.md).")
@click.option("--amp", type=click.Choice(["none", "fp16", "bf16"]), default="none",
              show_default=True, help="Mixed precision (GPU); fp16 white-lists conv3d.")
@click.option("--compile", "compile_", is_flag=True,
              help="Run the model through paddle.jit.to_static (Paddle's static-graph executor).")
@click.option("--step-stream", type=click.Choice(["side", "high", "default"]), default="side",
              show_default=True, help="GPU: run the steps on a non-blocking stream of their own "
              "(the NVDEC loader's frame conversions do not queue behind them), the same at high "
              "priority (the step's kernels go first where both wait for SMs), or on Paddle's.")
@click.option("--loader-sms", type=click.IntRange(0), default=None, show_default="auto",
              help="GPU: train on all but N of the GPU's SMs (a CUDA green context, CUDA 12.4+), "
              "so the NVDEC loader's per-frame kernels never queue behind the step's. auto: 2 "
              "with --decode gpu/hybrid, else 0 (off).")
@click.option("--sync-bn", is_flag=True,
              help="Under paddle.distributed.launch: BatchNorm statistics over the global batch "
                   "(GPU only; off = per-rank statistics, as Hara's per-GPU BN).")
@click.option("--checkpoint", "checkpoint_every", type=click.IntRange(1), default=10,
              show_default=True, help="Write last.pdckpt every N epochs (and at the end).")
@click.option("--val-every", type=click.IntRange(1), default=1, show_default=True)
@click.option("--val-from-train", type=click.FloatRange(0, 1, max_open=True), default=0.0,
              metavar="FRACTION",
              help="Validate (and pick best.pdckpt) on this fraction of the training groups, held "
                   "out of training; 0: on the test split, as Hara did.")
@click.option("--log-every", type=click.IntRange(1), default=10, show_default=True)
@click.option("--max-steps", type=click.IntRange(1),
              help="Cap steps per epoch (smoke runs; default: the whole epoch).")
@click.option("--max-val-steps", type=click.IntRange(1),
              help="Cap validation batches (default: all of them).")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--threads", "num_threads", type=click.IntRange(1),
              help="Loader decode threads (default: all cores).")
@click.option("--start-align", type=click.IntRange(1), default=1, show_default=True,
              help="Training clip starts on multiples of N frames; N = extract's --gop keeps "
                   "them on keyframes (~20% faster NVDEC, coarser temporal jitter).")
@click.option("--scales", callback=_scales, metavar="S1,S2,...",
              help="Training crop sides as fractions of the short side, one drawn per clip "
                   "(default: Hara's 1, 2^-1/4, 2^-1/2, 2^-3/4, 1/2).")
@click.option("--flip/--no-flip", default=True, show_default=True,
              help="Random horizontal flip in training (Hara: on; off for classes that differ "
                   "by direction).")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Default: runs/<model>_split<split>.")
@click.option("--resume", is_flag=True,
              help="Continue --run-dir from its last.pdckpt; options not given are the run's.")
@click.pass_context
@library_errors
def train(ctx: click.Context, **opts: Any) -> None:
    """Train a 3D ResNet with Hara et al.'s CVPR 2018 recipe (SGD, ReduceLROnPlateau)."""
    import json

    if opts["device"] == "gpu":  # before Paddle is imported: CUDA reads it at context creation
        from loader.workqueues import widen

        widen()

    from loader.config import HARA_SCALES
    from train.config import TrainConfig
    from train.dist import local_batch, world
    from train.models import model_name
    from train.run import fit
    from train.rundir import CONFIG_JSON, METRICS_JSONL

    depth, width, milestones = opts.pop("depth"), opts.pop("width"), opts.pop("milestones")
    if depth is not None and _given(ctx, "model_name"):
        raise click.BadParameter("give --model or --depth, not both", param_hint="--depth")
    try:
        opts["model"] = model_name(f"r3d{depth}" if depth else opts.pop("model_name"))
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--model") from e
    opts.pop("model_name", None)
    try:
        opts["milestones"] = tuple(int(m) for m in milestones.split(",") if m.strip())
    except ValueError as e:
        raise click.BadParameter(f"{milestones!r} is not a list of epochs",
                                 param_hint="--milestones") from e
    ms = opts["milestones"]
    if any(m < 1 for m in ms) or list(ms) != sorted(set(ms)):
        raise click.BadParameter(f"{milestones!r}: epochs must be >= 1 and increasing",
                                 param_hint="--milestones")  # fmt: skip
    opts["widths"] = (width, 2 * width, 4 * width, 8 * width) if width else None
    opts["size"] = opts.pop("clip_size")
    opts["compile"] = opts.pop("compile_")
    loader = {"start_align": opts.pop("start_align"), "flip": opts.pop("flip"),
              "scales": opts.pop("scales") or list(HARA_SCALES)}  # fmt: skip
    for name in ("cpu_share", "gpu_pipelines", "gpu_segment_clips"):  # else LoaderConfig's
        if (value := opts.pop(name)) is not None:
            loader[name] = value
    opts["loader_options"] = loader  # the crop and flip used are stored in the run's config
    resume = opts.pop("resume")
    given = {k for k in opts if k in ctx.params and _given(ctx, k)}
    given |= {"compile"} if _given(ctx, "compile_") else set()
    loader_given = {k: v for k, v in loader.items() if _given(ctx, k)}
    given |= {"model"} if depth or _given(ctx, "model_name") else set()
    given |= {"widths"} if width else set()
    given |= {"size"} if _given(ctx, "clip_size") else set()
    if opts["run_dir"] is None:
        opts["run_dir"] = Path("runs") / f"{opts['model']}_split{opts['split']}"
    saved = opts["run_dir"] / CONFIG_JSON
    if resume and saved.is_file():  # the run's own options, updated by those given now
        try:
            base = TrainConfig.from_dict(json.loads(saved.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as e:
            raise ValueError(f"{saved}: unreadable run config ({e}); use another --run-dir") from e
        opts = {**base.to_dict(), **{k: v for k, v in opts.items() if k in given}}
        opts["loader_options"] = {**base.loader_options, **loader_given}
    try:
        cfg = TrainConfig(**opts)
    except ValueError as e:  # option values that do not fit together
        raise click.UsageError(str(e)) from e
    try:  # under paddle.distributed.launch the batch is shared by the ranks
        local_batch(cfg.batch_size, world()[1])
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--batch-size") from e
    run = fit(cfg, resume=resume)
    if world()[0] != 0:  # rank 0 wrote the run's files (perhaps on another machine) and reports
        return
    lines = (run / METRICS_JSONL).read_text(encoding="utf-8").splitlines()
    last = json.loads(lines[-1]) if lines else {}
    best = max((json.loads(ln).get("val_acc", -1) for ln in lines), default=-1)
    click.echo(f"trained {cfg.model} to epoch {last.get('epoch')}: train loss "
               f"{last.get('train_loss', float('nan')):.4f}, best val clip acc {best:.4f} -> {run}")


@main.command("eval")
@click.option("--ckpt", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="A checkpoint written by `ucf3d train` (best.pdckpt or last.pdckpt).")
@click.option("--mode", type=click.Choice(["clip", "video", "both"]), default="both",
              show_default=True, help="clip: 3 clips per video; video: every 16-frame window.")
@click.option("--windows", type=click.Choice(["full", "hara"]), default="full", show_default=True,
              help="Video mode: whole 16-frame windows only (the paper), or also the last partial "
                   "one, loop-padded, as Hara's test loader does (needs --decode cpu).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (default: <run dir>/eval-<checkpoint name>).")
@click.option("--manifests", type=click.Path(file_okay=False, path_type=Path),
              help="Default: the checkpoint's.")
@click.option("--shards", type=click.Path(file_okay=False, path_type=Path),
              help="Default: the checkpoint's.")
@click.option("--batch-size", type=click.IntRange(1), help="Clips per batch (default: training's).")
@click.option("--device", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True)
@click.option("--decode", type=click.Choice(["cpu", "gpu", "hybrid"]),
              help="Decode clips on the cpu, the gpu (NVDEC) or both (default: training's).")
@click.option("--threads", "num_threads", type=click.IntRange(1),
              help="Loader decode threads (default: training's, else all cores).")
@library_errors
def eval_(ckpt: Path, mode: str, windows: str, out: Path | None, device: str,
          **loader: Any) -> None:
    """Clip and video top-1/top-5 of a checkpoint, per-video predictions, confusion matrix."""
    if device == "gpu":  # before Paddle is imported: CUDA reads it at context creation
        from loader.workqueues import widen

        widen()
    from train.evaluation import EVAL_MODES, evaluate_checkpoint

    modes = EVAL_MODES if mode == "both" else (mode,)
    r = evaluate_checkpoint(ckpt, modes=modes, out_dir=out, device=device,
                            loader_overrides=loader, progress=progress_bar("eval"),
                            windows=windows)
    parts = [f"{m}: clip top-1 {v['clip_top1']:.4f}, video top-1 {v['video_top1']:.4f} "
             f"top-5 {v['video_top5']:.4f} ({v['videos']} videos)" for m, v in r["modes"].items()]
    click.echo("; ".join(parts) + f" -> {r['files']['eval']}")


@main.command("export")
@click.option("--ckpt", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="A checkpoint written by `ucf3d train` (best.pdckpt or last.pdckpt).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for model.json, model.pdiparams and meta.json (what predict reads).")
@library_errors
def export_(ckpt: Path, out: Path) -> None:
    """Export a checkpoint as a Paddle inference model (dynamic batch) with its class names."""
    from train.export import export_checkpoint

    click.echo(f"exported {ckpt} -> {export_checkpoint(ckpt, out)}")


@main.command()
@click.argument("video", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--model", "model_dir", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="A folder written by `ucf3d export`.")
@click.option("--topk", type=click.IntRange(1), default=5, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True)
@library_errors
def predict(video: Path, model_dir: Path, topk: int, device: str) -> None:
    """Top-k actions in a raw video (any format ffmpeg reads), averaged over its 16-frame clips."""
    from train.predict import predict_video

    r = predict_video(video, model_dir, topk=topk, device=device)
    click.echo(f"{video}: {r['windows']} windows")
    for i, (name, p) in enumerate(r["top"], 1):
        click.echo(f"{i}. {name} {p:.4f}")

# ==== several GPUs or machines (launch) ======================================================


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--nproc-per-node", type=click.IntRange(1), required=True,
              help="Processes on this machine: one per GPU.")
@click.option("--nnodes", type=click.IntRange(1), default=1, show_default=True,
              help="Machines; run the same command on each.")
@click.option("--master", metavar="HOST:PORT",
              help="Address of the first machine, which all machines reach (with --nnodes > 1).")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
@library_errors
def launch(ctx: click.Context, nproc_per_node: int, nnodes: int, master: str | None,
           command: tuple[str, ...]) -> None:
    """Run `train ...` or `eval ...` data-parallel through paddle.distributed.launch, with the
    launcher's logs in the run directory (RUN_DIR/launch, or OUT/launch for eval; one folder
    per machine below it with --nnodes > 1)."""
    import os

    if nnodes > 1 and not master:
        raise click.BadParameter("several machines need --master HOST:PORT", param_hint="--master")
    logs = _launch_dir(ctx, command)
    if nnodes > 1:  # one folder per machine: every launcher names its logs workerlog.<local rank>
        import socket

        logs = logs / socket.gethostname()
    logs.parent.mkdir(parents=True, exist_ok=True)
    script = Path(sys.argv[0]).resolve()  # this program: ucf3d's entry script or cli.py
    if not script.is_file():
        script = Path(__file__).resolve()
    args = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node",
            str(nproc_per_node), "--nnodes", str(nnodes), "--log_dir", str(logs),
            *(["--master", master] if master else []), str(script),
            *(["--debug"] if ctx.find_root().obj.get("debug") else []), *command]  # fmt: skip
    click.echo(f"launch: {nproc_per_node} x {nnodes} processes, logs in {logs}", err=True)
    os.execv(sys.executable, args)  # the launcher takes this process over: Ctrl-C reaches it


def _launch_dir(ctx: click.Context, command: tuple[str, ...]) -> Path:
    """The launcher's log folder: under train's run directory, or eval's output folder."""
    name, args = command[0], list(command[1:])
    if name == "train":
        from train.models import model_name

        p = train.make_context("train", args, parent=ctx).params
        if p["run_dir"] is not None:
            return p["run_dir"] / "launch"
        model = model_name(f"r3d{p['depth']}" if p["depth"] else p["model_name"])
        return Path("runs") / f"{model}_split{p['split']}" / "launch"
    if name == "eval":
        p = eval_.make_context("eval", args, parent=ctx).params
        return (p["out"] or p["ckpt"].parent / f"eval-{p['ckpt'].stem}") / "launch"
    raise click.BadParameter(f"{name!r}: launch runs train or eval", param_hint="COMMAND")


# ==== demo and report ========================================================================


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo"),
              show_default=True, help="Folder for everything the demo writes (re-run to resume).")
@click.option("--epochs", type=click.IntRange(1), help="Training epochs (default: the demo's).")
@click.option("--threads", type=click.IntRange(1), help="Loader decode threads (default: all).")
@click.option("--dataset", type=click.Choice(["ucf101", "hmdb51"]), default="ucf101",
              show_default=True, help="The synthetic set's layout and split files.")
@library_errors
def demo(out: Path, epochs: int | None, threads: int | None, dataset: str) -> None:
    """The whole pipeline on a synthetic UCF-101 on this CPU: synth, extract, shard (split 1),
    train, eval, report (about 10 minutes on 2 cores)."""
    from demo import DemoConfig, run_demo

    cfg = DemoConfig(out=out, threads=threads, dataset=dataset)
    if epochs is not None:  # keep the schedule's shape: milestones scale with the epochs
        cfg = cfg.with_epochs(epochs)
    click.echo("ucf3d demo, CPU settings chosen for you:")
    for line in cfg.settings():
        click.echo(f"  {line}")
    r = run_demo(cfg, progress=progress_bar)
    click.echo(f"demo: clip top-1 {r.clip_top1:.1%}, video top-1 {r.video_top1:.1%} on the "
               f"held-out test groups in {sum(r.seconds.values()):.0f} s "
               f"({', '.join(f'{k} {v:.0f} s' for k, v in r.seconds.items())})"
               + (f"; found done: {', '.join(r.skipped)}" if r.skipped else ""))
    for name, path in (("videos", r.synth), ("shards", r.shards), ("manifests", r.manifests),
                       ("checkpoints", r.run_dir), ("report", r.report)):
        click.echo(f"  {name + ':':12} {path}")


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--eval-dir", type=click.Path(file_okay=False, path_type=Path),
              help="An eval folder (default: RUN_DIR/eval-last, else eval-best, else the newest).")
@library_errors
def report(run_dir: Path, eval_dir: Path | None) -> None:
    """Rebuild RUN_DIR's report: curves.png, confusion matrix and report.md."""
    from train.report import build_report

    click.echo(f"report: {build_report(run_dir, eval_dir)}")


if __name__ == "__main__":
    main()
