"""ucf3d train, eval, export and predict: the training commands (cli.py adds them to `ucf3d`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from clikit import Finite, library_errors, progress_bar

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


@click.command()
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
@click.option("--handover-stream", type=click.Choice(["step", "side", "rest"]), default=None,
              show_default="step", help="GPU: where the hand-over kernel turns DALI's clips into "
              "the batch: on the step's stream before the step, or one batch ahead on a stream "
              "of its own, beside the step before: high-priority on the step's SMs (side) or on "
              "the SMs the partition leaves to the loader (rest). Measured with an eager step: "
              "no gain (docs/BENCHMARKS.md, eighteenth round).")
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
    # not given: LoaderConfig's defaults
    for name in ("cpu_share", "gpu_pipelines", "gpu_segment_clips", "handover_stream"):
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


@click.command("eval")
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


@click.command("export")
@click.option("--ckpt", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="A checkpoint written by `ucf3d train` (best.pdckpt or last.pdckpt).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for model.json, model.pdiparams and meta.json (what predict reads).")
@library_errors
def export_(ckpt: Path, out: Path) -> None:
    """Export a checkpoint as a Paddle inference model (dynamic batch) with its class names."""
    from train.export import export_checkpoint

    click.echo(f"exported {ckpt} -> {export_checkpoint(ckpt, out)}")


@click.command()
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
