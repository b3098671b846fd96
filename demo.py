"""The demo: synth -> extract -> shard -> train -> eval -> report on a synthetic UCF-101, on a CPU.

Every stage goes through the public library function a user would call, and talks to the next
through files, all under one folder (default `demo/`):

    OUT/synth/       UCF-101/ + ucfTrainTestlist/ (prep.synth)
    OUT/work/        re-encoded videos + index.jsonl (prep.extract; resumes)
    OUT/shards/      webdataset shards, OUT/manifests/ split-1 manifests (prep.shard)
    OUT/runs/<run>/  config.json, metrics.jsonl, train.log, last/best.pdckpt, eval-last/, report.md
    OUT/demo.json    the demo's settings, stage times and accuracies

A re-run into the same folder with the same settings skips what is finished (synth, a completed
training, an evaluation newer than its checkpoint) and continues an interrupted training from its
last checkpoint; a folder that holds a demo with other settings is refused. `dataset="hmdb51"`
runs the same route on the synthetic set in HMDB-51's layout (prep.synth_hmdb).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEMO_JSON = "demo.json"
# Settings that do not change what the demo computes (may differ on a re-run into the same folder).
RUNTIME_FIELDS = ("out", "threads", "jobs")

ProgressFactory = Callable[[str], Callable[..., None] | None]
DATA_NAMES = {"ucf101": "UCF-101", "hmdb51": "HMDB-51"}


@dataclass(frozen=True)
class DemoConfig:
    """CPU settings for the default 10-class synthetic set: ~88 % video top-1 in ~9 minutes."""

    out: Path = Path("demo")
    # data: prep.synth's default set (10 classes x 25 groups, ~3 s clips); split 1 tests groups 1-7
    classes: int = 10
    groups: int = 25
    clips: int = 2  # two clips per group and class: 360 training videos on split 1
    seconds: float = 3.0
    data_seed: int = 0
    # extract: a small short side keeps decoding and the model cheap
    short_side: int = 64
    gop: int = 8  # extract's default
    # training: the tiny 3D ResNet (widths 8-16-32-64) on 16 x size x size clips
    model: str = "tiny"
    size: int = 56
    epochs: int = 16
    batch_size: int = 8
    lr: float = 0.01  # Hara's recipe (0.1 with PyTorch's dampening) in Paddle's terms
    milestones: tuple[int, ...] = (13,)
    val_every: int = 8
    seed: int = 1
    # loader: whole-short-side crops keep the moving object in view; no mirroring, since
    # mirroring turns MoveLeft into MoveRight and clockwise into counter-clockwise
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    start_align: int = 1
    threads: int | None = None  # loader decode threads; None: all cores
    jobs: int = 0  # ffmpeg processes for synth and extract; 0: all cores
    dataset: str = "ucf101"  # or "hmdb51": the same motions in HMDB-51's layout and split files

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))

    def with_epochs(self, epochs: int) -> DemoConfig:
        """Another length of training; the lr milestones keep their place relative to the end."""
        ms = sorted({min(max(1, round(m * epochs / self.epochs)), epochs) for m in self.milestones})
        return replace(self, epochs=epochs, milestones=tuple(ms))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"] = str(self.out)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def identity(self) -> dict[str, Any]:
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}

    def settings(self) -> list[str]:
        """The chosen settings, one line each, as the demo shows them up front."""
        threads = self.threads or os.cpu_count() or 1
        return [
            f"data: synthetic {DATA_NAMES[self.dataset]}, {self.classes} classes x {self.groups} "
            f"groups x {self.clips} clip(s) of ~{self.seconds:g} s, split 1 "
            f"(test groups {'1-7' if self.dataset == 'ucf101' else '1, 6, 11, ...'})",
            f"extract: VP9, short side {self.short_side}, GOP {self.gop}",
            f"model: {self.model}, clips 16 x {self.size} x {self.size}, batch {self.batch_size}",
            f"training: {self.epochs} epochs, SGD lr {self.lr} x0.1 at epochs "
            f"{', '.join(map(str, self.milestones))}, validation every {self.val_every} epochs",
            f"loader: crop scales {', '.join(f'{s:g}' for s in self.scales)}, "
            f"flip {'on' if self.flip else 'off'}, "
            f"start align {self.start_align}, "
            f"{threads} decode threads",
        ]


@dataclass(frozen=True)
class DemoResult:
    out: Path
    synth: Path
    work: Path
    shards: Path
    manifests: Path
    run_dir: Path
    checkpoint: Path
    eval_dir: Path
    report: Path
    clip_top1: float
    video_top1: float
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage
    skipped: tuple[str, ...] = ()  # stages found finished by an earlier run


def _check_out(cfg: DemoConfig) -> None:
    """Refuse a folder that holds another demo (or anything else that is not empty)."""
    out, saved = cfg.out, cfg.out / DEMO_JSON
    if saved.is_file():
        try:
            old = {"dataset": "ucf101", **json.loads(saved.read_text(encoding="utf-8"))["config"]}
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{saved}: unreadable demo record ({e}); use another --out") from e
        ours = cfg.identity()
        diff = [f"{k}: {old.get(k)!r} != {v!r}" for k, v in ours.items() if old.get(k) != v]
        if diff:
            raise ValueError(
                f"{out}: holds a demo with other settings ({'; '.join(diff[:3])}); "
                "use another --out, or delete the folder to start over"
            )
    elif out.exists() and any(out.iterdir()):
        raise ValueError(f"{out}: exists and is not a demo folder; use another --out")


def _write_record(cfg: DemoConfig, extra: dict[str, Any]) -> None:
    cfg.out.mkdir(parents=True, exist_ok=True)
    path = cfg.out / DEMO_JSON
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"config": cfg.to_dict(), **extra}, indent=2) + "\n", "utf-8")
    tmp.replace(path)


def train_config(cfg: DemoConfig, manifests: Path, shards: Path, run_dir: Path):
    """The TrainConfig the demo trains with."""
    from train import TrainConfig

    loader = {"scales": list(cfg.scales), "flip": cfg.flip, "start_align": cfg.start_align}
    return TrainConfig(
        model=cfg.model, manifests=manifests, shards=shards, split=1, size=cfg.size,
        batch_size=cfg.batch_size, lr=cfg.lr, schedule="multistep", milestones=cfg.milestones,
        epochs=cfg.epochs, checkpoint_every=1, val_every=cfg.val_every, log_every=5,
        seed=cfg.seed, num_threads=cfg.threads, run_dir=run_dir, loader_options=loader,
    )  # fmt: skip


def run_demo(cfg: DemoConfig, progress: ProgressFactory | None = None) -> DemoResult:
    """Run (or finish) every stage into cfg.out; returns where everything is and the accuracies.

    progress: given a stage name, returns that stage's progress callback (or None).
    """
    from train.report import build_report

    _check_out(cfg)
    out = cfg.out
    synth_dir, work = out / "synth", out / "work"
    shards, manifests = out / "shards", out / "manifests"
    run_dir = out / "runs" / f"{cfg.model}_split1"
    ckpt, eval_dir = run_dir / "last.pdckpt", run_dir / "eval-last"
    tcfg = train_config(cfg, manifests, shards, run_dir)
    for line in cfg.settings():
        log.debug("demo settings: %s", line)  # the CLI shows them up front
    seconds: dict[str, float] = {}
    skipped: list[str] = []
    record: dict[str, Any] = {"seconds": seconds, "skipped": skipped}
    _write_record(cfg, record)
    stages: list[tuple[str, str, Callable[[], bool]]] = [
        ("synth", f"{cfg.classes} classes x {cfg.groups} groups -> {synth_dir}",
         lambda: _synth(cfg, synth_dir, _bar(progress, "synth"))),
        ("extract", f"VP9 at short side {cfg.short_side} -> {work}",
         lambda: _extract(cfg, synth_dir, work, _bar(progress, "extract"))),
        ("shard", f"split 1 -> {shards}, {manifests}",
         lambda: _shard(work, shards, manifests, _bar(progress, "shard"))),
        ("train", f"{cfg.model} for {cfg.epochs} epochs -> {run_dir}",
         lambda: _train(tcfg, ckpt)),
        ("eval", f"{ckpt.name} on the test groups, clip and video mode -> {eval_dir}",
         lambda: _eval(ckpt, eval_dir, _bar(progress, "eval"))),
        ("report", f"-> {run_dir / 'report.md'}",
         lambda: build_report(run_dir, eval_dir) is None),  # always rebuilt
    ]  # fmt: skip
    for i, (name, what, run) in enumerate(stages, 1):
        log.info("==== [%d/%d] %s: %s", i, len(stages), name, what)
        t0 = time.perf_counter()
        found = run()
        seconds[name] = round(time.perf_counter() - t0, 1)
        skipped.extend([name] if found else [])
        log.info("==== %s %s in %.1f s", name, "found done" if found else "done", seconds[name])
        _write_record(cfg, record)
    ev = json.loads((eval_dir / "eval.json").read_text(encoding="utf-8"))
    record.update(clip_top1=ev["clip_top1"], video_top1=ev["video_top1"],
                  video_top1_clip_mode=ev["modes"]["clip"]["video_top1"],
                  total_s=round(sum(seconds.values()), 1), run_dir=str(run_dir))  # fmt: skip
    _write_record(cfg, record)
    return DemoResult(
        out, synth_dir, work, shards, manifests, run_dir, ckpt, eval_dir, run_dir / "report.md",
        ev["clip_top1"], ev["video_top1"], dict(seconds), tuple(skipped),
    )  # fmt: skip


def _bar(progress: ProgressFactory | None, stage: str) -> Callable[..., None] | None:
    return progress(stage) if progress is not None else None


# Each stage returns True when it found its work done by an earlier run.


def _synth(cfg: DemoConfig, synth_dir: Path, bar: Callable[..., None] | None) -> bool:
    from prep.synth import SynthConfig, synth

    marker = synth_dir / "synth.json"  # written last: the synthetic set is complete
    if marker.is_file():
        return True
    scfg = SynthConfig(synth_dir, cfg.classes, cfg.groups, cfg.clips, cfg.seconds, cfg.data_seed,
                       cfg.jobs, dataset=cfg.dataset)  # fmt: skip
    marker.write_text(json.dumps(synth(scfg, bar)) + "\n", encoding="utf-8")
    return False


def _extract(cfg: DemoConfig, synth_dir: Path, work: Path, bar: Callable[..., None] | None) -> bool:
    from prep.extract import ExtractConfig, extract

    videos, lists = {"ucf101": ("UCF-101", "ucfTrainTestlist"),
                     "hmdb51": ("hmdb51_org", "testTrainMulti_7030_splits")}[cfg.dataset]
    ecfg = ExtractConfig(synth_dir / videos, synth_dir / lists, work, short_side=cfg.short_side,
                         gop=cfg.gop, jobs=cfg.jobs, dataset=cfg.dataset)  # fmt: skip
    return extract(ecfg, bar).encoded == 0


def _shard(work: Path, shards: Path, manifests: Path, bar: Callable[..., None] | None) -> bool:
    from prep.shard import ShardConfig, shard

    return shard(ShardConfig(work, 1, shards, manifests), bar)["written"] == 0


def _train(tcfg: Any, ckpt: Path) -> bool:
    from train import fit

    if _epochs_done(tcfg.run_dir) >= tcfg.epochs and ckpt.is_file():
        return True
    fit(tcfg, resume=ckpt.is_file())  # resume: an interrupted demo continues from last.pdckpt
    return False


def _eval(ckpt: Path, eval_dir: Path, bar: Callable[..., None] | None) -> bool:
    from train import evaluate_checkpoint

    done = eval_dir / "eval.json"
    if done.is_file() and done.stat().st_mtime > ckpt.stat().st_mtime:
        return True
    evaluate_checkpoint(ckpt, modes=("clip", "video"), out_dir=eval_dir, progress=bar)
    return False


def _epochs_done(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return 0
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return int(json.loads(lines[-1])["epoch"]) if lines else 0
