"""ucf3d command line: a thin click shell over prep, loader and train (one library call each).

This module holds the `ucf3d` group, the prep commands, launch, demo and report; clitrain.py holds
train, eval, export and predict, clibench.py the bench group, clikit.py what they share."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from clibench import bench
from clikit import (
    ByteSize,
    dataset_option,
    existing_dir,
    ffmpeg_option,
    jobs_option,
    library_errors,
    progress_bar,
)
from clitrain import eval_, export_, predict, train

log = logging.getLogger("ucf3d")


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


main.add_command(bench)  # clibench.py: bench prep, loader, feed, footage
for _command in (train, eval_, export_, predict):  # clitrain.py
    main.add_command(_command)


# ==== prep commands (synth, extract, shard) ===================================================


@main.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@dataset_option
@click.option("--classes", type=click.IntRange(1, 101), default=10, show_default=True)
@click.option("--groups", type=click.IntRange(1, 99), default=25, show_default=True)
@click.option("--clips", type=click.IntRange(1, 99), default=1, show_default=True,
              help="Clips per group and class.")
@click.option("--seconds", type=click.FloatRange(0.8, 60), default=3.0, show_default=True,
              help="Mean clip length (each is 0.7x-1.3x this).")
@click.option("--seed", type=int, default=0, show_default=True)
@jobs_option
@ffmpeg_option
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
@dataset_option
@click.option("--videos", required=True, type=existing_dir,
              help="The unpacked UCF-101/ (or hmdb51_org/) directory (<Class>/<video>.avi).")
@click.option("--splits", required=True, type=existing_dir,
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
@jobs_option
@click.option("--strict", is_flag=True, help="Exit 1 if any listed video could not be prepared.")
@ffmpeg_option
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
