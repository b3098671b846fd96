"""Export a checkpoint as a Paddle inference model (paddle.jit.save) plus what predict needs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import paddle
from paddle.static import InputSpec
from paddle.utils import unique_name

from train import checkpoint as ck
from train.config import MEAN, STD, sha256_file, writable_dir, write_json
from train.preprocess import FPS, SHORT_SIDE

log = logging.getLogger(__name__)

PREFIX = "model"  # DIR/model.json (PIR program) or model.pdmodel, DIR/model.pdiparams
META = "meta.json"  # classes, clip geometry and normalisation


def export_checkpoint(ckpt: Path, out_dir: Path) -> Path:
    """Save the network with a dynamic batch, input (N, 3, T, S, S) float32, logits out."""
    ckpt, out_dir = Path(ckpt), Path(out_dir)
    paddle.set_device("cpu")
    with unique_name.guard():
        model, state = ck.model_from_checkpoint(ckpt)
    cfg = ck.checkpoint_config(state, ckpt)
    writable_dir(out_dir)  # else Paddle's C++ save fails with its own internals
    spec = InputSpec([None, 3, cfg.clip_len, cfg.size, cfg.size], "float32", "clips")
    model.eval()
    paddle.jit.save(model, str(out_dir / PREFIX), input_spec=[spec])
    meta: dict[str, Any] = {
        "classes": list(state["classes"]),
        "model": cfg.model,
        "checkpoint": str(ckpt),
        "epoch": int(state["epoch"]),
        "clip_len": cfg.clip_len,
        "size": cfg.size,
        "short_side": SHORT_SIDE,  # ucf3d extract's default; the checkpoint cannot know another
        "fps": FPS,  # ucf3d extract's constant frame rate
        "mean": list(cfg.loader_options.get("mean", MEAN)),
        "std": list(cfg.loader_options.get("std", STD)),
        "input": "clips (N, 3, T, H, W) float32, RGB 0-255 minus mean, divided by std",
        "output": "logits (N, classes)",
        "files": {  # checked by predict: a truncated or swapped file is named, not run
            p.name: sha256_file(p) for p in sorted(out_dir.glob(f"{PREFIX}.*")) if p.is_file()
        },
    }
    write_json(out_dir / META, meta)  # written last: its presence marks a complete export
    log.info("exported %s (epoch %d) to %s", ckpt, meta["epoch"], out_dir)
    return out_dir
