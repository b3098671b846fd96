"""The run directory: refuse another run's folder, metrics.jsonl lines, the run's train.log, the
resume hint after Ctrl-C."""

from __future__ import annotations

import contextlib
import json
import logging
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from train import checkpoint as ck
from train.config import TrainConfig

CONFIG_JSON = "config.json"
METRICS_JSONL = "metrics.jsonl"
TRAIN_LOG = "train.log"


def prepare_run_dir(cfg: TrainConfig, resume: bool) -> Path | None:
    """Refuse a run directory that holds another run; return the checkpoint to resume, if any."""
    run, last = cfg.run_dir, cfg.run_dir / ck.LAST
    cfg_file = run / CONFIG_JSON
    if cfg_file.is_file():
        try:
            old = TrainConfig.from_dict(json.loads(cfg_file.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as e:
            raise ValueError(
                f"{cfg_file}: unreadable run config ({e}); choose another --run-dir"
            ) from e
        diff = old.differences(cfg)
        if diff:
            raise ValueError(
                f"{cfg_file}: run directory holds a different run ({'; '.join(diff[:3])}); "
                "choose another --run-dir or repeat the original options"
            )
        if last.exists() and not resume:
            raise ValueError(
                f"{last}: run directory already holds this run; pass --resume to continue it "
                "or choose another --run-dir"
            )
    if not resume:
        return None
    if not last.exists():
        raise ck.CheckpointError(f"{last}: no checkpoint to resume from; drop --resume to start")
    return last


def resume_hint(cfg: TrainConfig) -> str:
    """After Ctrl-C: which epoch the run's last.pdckpt holds, and the command that resumes it."""
    last = cfg.run_dir / ck.LAST
    try:
        epoch = int(ck.load_checkpoint(last)["epoch"]) if last.is_file() else None
    except ck.CheckpointError:
        epoch = None
    if epoch is None:
        return (
            f"no checkpoint saved yet in {cfg.run_dir} (one is written every "
            f"{cfg.checkpoint_every} epoch(s)); run the same command again to start over"
        )
    return (
        f"epoch {epoch} of {cfg.epochs} is the last saved ({last}); resume with: "
        f"ucf3d train --run-dir {shlex.quote(str(cfg.run_dir.resolve()))} --resume"
    )


def append_metrics(path: Path, record: dict[str, Any], keep_upto: int | None = None) -> None:
    """Append one JSON line; with keep_upto, first drop lines of epochs after the resumed one."""
    if keep_upto is not None:
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        kept = [ln for ln in lines if ln.strip() and json.loads(ln)["epoch"] <= keep_upto]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(ln + "\n" for ln in kept), encoding="utf-8")
        tmp.replace(path)
    if record:
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")


@contextlib.contextmanager
def log_to(path: Path) -> Iterator[None]:
    """Also append this package's log records to the run's train.log while training."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    pkg = logging.getLogger("train")
    level = pkg.level
    if pkg.getEffectiveLevel() > logging.INFO:
        pkg.setLevel(logging.INFO)
    pkg.addHandler(handler)
    try:
        yield
    finally:
        pkg.removeHandler(handler)
        pkg.setLevel(level)
        handler.close()
