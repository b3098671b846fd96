"""Checkpoints: one atomic file with model, optimiser, scheduler, scaler, epoch, RNG and config."""

from __future__ import annotations

import hashlib
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import paddle

from train.config import TrainConfig
from train.models import ResNet3D, create_model

log = logging.getLogger(__name__)

FORMAT = "ucf3d-checkpoint"
VERSION = 1
MODEL_SHA256 = "model_sha256"  # checksum of the weights, checked on load
LAST = "last.pdckpt"
BEST = "best.pdckpt"


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or does not fit; the message names the file."""


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "paddle": paddle.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    try:
        paddle.set_rng_state(state["paddle"])
    except (ValueError, RuntimeError, TypeError):  # saved on another device type: reseeded instead
        pass


def _array(v: Any) -> np.ndarray:
    return v.numpy() if hasattr(v, "numpy") else np.asarray(v)


def weights_sha256(weights: dict[str, Any]) -> str:
    """sha256 over every weight's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(weights):
        a = np.ascontiguousarray(_array(weights[name]))
        h.update(f"{name} {a.dtype} {a.shape}\n".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    """Write `state` plus format tags and the weights' sha256 to `path` atomically (tmp + fsync
    + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tags = {"format": FORMAT, "version": VERSION, MODEL_SHA256: weights_sha256(state["model"])}
    paddle.save({**state, **tags}, str(tmp))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read and sanity-check a checkpoint; CheckpointError with the file name on any problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found (check the path, or train first)")
    try:
        state = paddle.load(str(path))
    except Exception as e:  # paddle.load raises pickle, EOF, OS and value errors alike
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(e).__name__}); delete it and train again "
            "or pass another checkpoint"
        ) from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a ucf3d checkpoint; pass one written by `ucf3d train`")
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {state.get('version')}, expected {VERSION}"
        )
    for key in ("config", "model", "epoch", "classes"):
        if key not in state:
            raise CheckpointError(
                f"{path}: checkpoint lacks {key!r}; it is incomplete, train again"
            )
    if MODEL_SHA256 not in state:  # written before checksums were stored: usable, unverified
        log.warning("%s: no weights checksum (an older checkpoint); weights not verified", path)
    elif weights_sha256(state["model"]) != state[MODEL_SHA256]:
        raise CheckpointError(
            f"{path}: weights do not match their checksum: the file is corrupt; use another "
            "checkpoint (best/last) or train again"
        )
    return state


def checkpoint_config(state: dict[str, Any], path: Path) -> TrainConfig:
    try:
        return TrainConfig.from_dict(state["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: checkpoint config is invalid ({e})") from e


def load_model_weights(model: ResNet3D, weights: dict[str, Any], path: Path) -> None:
    """set_state_dict only warns on mismatches; here any missing key or shape is an error."""
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not fit this model (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}); it was built for another architecture"
        )
    for k, v in own.items():
        if list(v.shape) != list(weights[k].shape):
            raise CheckpointError(
                f"{path}: {k} has shape {list(weights[k].shape)}, the model wants {list(v.shape)}; "
                "the checkpoint was built for another depth, width or class count"
            )
    bad = [k for k, v in weights.items() if not np.isfinite(_array(v)).all()]
    if bad:
        raise CheckpointError(
            f"{path}: weights hold NaN or inf ({', '.join(bad[:3])}); the run that saved it "
            "diverged, use an earlier checkpoint"
        )
    model.set_state_dict(weights)


def model_from_checkpoint(
    path: Path, num_classes: int | None = None, state: dict[str, Any] | None = None
) -> tuple[ResNet3D, dict]:
    """Rebuild the model a checkpoint was trained as; num_classes, if given, must agree.

    state: the checkpoint already loaded from `path` (saves reading it twice).
    """
    state = state if state is not None else load_checkpoint(path)
    cfg = checkpoint_config(state, path)
    n = len(state["classes"])
    if num_classes is not None and num_classes != n:
        raise CheckpointError(
            f"{path}: checkpoint has {n} classes but the data has {num_classes}; "
            "evaluate it on the split it was trained on"
        )
    model = create_model(cfg.model, n, cfg.shortcut, cfg.widths)
    load_model_weights(model, state["model"], path)
    model.eval()
    return model, state
