"""A whole training run: fit() opens the loaders, builds the model and optimiser, runs the epochs
(train.loop) and keeps the run directory (config, metrics, log, checkpoints)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import paddle
from paddle.utils import unique_name

from loader.hostmem import STEAL_WARN_PCT
from train import checkpoint as ck
from train import dist
from train.config import TrainConfig, write_json
from train.device import check_gpu_decode, compute_stream, use_device
from train.loop import Amp, ClipSource, evaluate, train_one_epoch
from train.models import create_model
from train.rundir import (
    CONFIG_JSON,
    METRICS_JSONL,
    TRAIN_LOG,
    append_metrics,
    log_to,
    prepare_run_dir,
    resume_hint,
)

log = logging.getLogger(__name__)


def build_optimizer(cfg: TrainConfig, model: paddle.nn.Layer):
    """SGD with momentum and L2 decay; ReduceOnPlateau on val loss or MultiStepDecay by epoch."""
    if cfg.schedule == "plateau":
        sched = paddle.optimizer.lr.ReduceOnPlateau(cfg.lr, mode="min", factor=cfg.gamma,
                                                    patience=cfg.patience)  # fmt: skip
    else:
        sched = paddle.optimizer.lr.MultiStepDecay(cfg.lr, list(cfg.milestones), cfg.gamma)
    opt = paddle.optimizer.Momentum(
        sched, cfg.momentum, model.parameters(), weight_decay=cfg.weight_decay,
        multi_precision=cfg.amp == "fp16",
    )  # fmt: skip
    return opt, sched


def clip_dtype(amp: str, device: str) -> str:
    """The dtype the loader hands clips over in: float16 under mixed precision on the GPU, else
    float32 (and float16 for fp16 anywhere, as before).

    With bf16 the model's first convolution casts the clips to bf16 anyway, and float16 holds
    (x - mean) on 0-255 more finely than bf16 does, so nothing is lost; the hand-over between
    steps (loader.bridge.normalize) then writes 2 bytes a value instead of 4. This is also what
    `ucf3d bench feed --dtype float16` measures beside its bf16 stand-in.
    """
    return "float16" if amp == "fp16" or (amp == "bf16" and device == "gpu") else "float32"


def open_loaders(cfg: TrainConfig) -> tuple[ClipSource, ClipSource]:
    """The real DALI loaders: random clips from the train subset, 3 clips per test video for val
    (or per video of the held-out training groups, with cfg.val_from_train)."""
    from loader import ClipLoader, LoaderConfig  # lazy: unit tests feed in-memory batches
    from loader.config import clips_on_for

    check_gpu_decode(cfg.decode)
    world = dist.world()[1]  # each rank loads its share of every batch (loader: PADDLE_TRAINER_ID)
    common = dict(
        manifests=cfg.manifests, shards=cfg.shards, split=cfg.split,
        batch_size=dist.local_batch(cfg.batch_size, world),
        clip_len=cfg.clip_len, size=cfg.size, decode=cfg.decode, seed=cfg.seed,
        dtype=clip_dtype(cfg.amp, cfg.device), **cfg.loader_options,
    )  # fmt: skip
    # clips handed over where the model trains: on the GPU no step waits on a pageable copy
    common.setdefault("clips_on", clips_on_for(cfg.device, cfg.decode))
    # NVDEC plans end with the run: none is built for epochs it will not take
    common.setdefault("gpu_last_epoch", cfg.epochs - 1)
    if cfg.num_threads is not None:
        common["num_threads"] = cfg.num_threads
    elif world > 1:  # the ranks on one machine share its cores
        common["num_threads"] = dist.threads_per_rank()
    val_subset, parts = "test", ("all", "all")
    if cfg.val_from_train:  # validate on held-out training groups; the test split stays unseen
        common["holdout"] = cfg.val_from_train
        val_subset, parts = "train", ("kept", "held")
    train_cfg = LoaderConfig(subset="train", mode="train", part=parts[0], **common)
    if world > 1:  # every rank must take the same number of steps, or an all-reduce waits forever
        train_cfg = dataclasses.replace(train_cfg, drop_last=True)
    train = ClipLoader(train_cfg)
    val = ClipLoader(LoaderConfig(subset=val_subset, mode="clip", part=parts[1], **common))
    return train, val


def fit(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    train_data: ClipSource | None = None,
    val_data: ClipSource | None = None,
) -> Path:
    """Train cfg.epochs epochs (or the rest, with resume) into cfg.run_dir; returns the run dir."""
    use_device(cfg.device)
    rank, world = dist.init()
    dist.local_batch(cfg.batch_size, world)
    to_resume = prepare_run_dir(cfg, resume)
    state = ck.load_checkpoint(to_resume) if to_resume else None
    if state is not None:
        diff = ck.checkpoint_config(state, to_resume).differences(cfg)
        if diff:
            raise ck.CheckpointError(
                f"{to_resume}: checkpoint is of another run ({'; '.join(diff)})"
            )
    # Every rank starts from the same epoch of the same checkpoint (a run dir all ranks share),
    # and has read the run dir before rank 0 writes to it.
    resumed = (str(to_resume), int(state["epoch"])) if state is not None else None
    dist.check_same(resumed, "the checkpoint resumed (run directory shared by all ranks?)")
    with contextlib.ExitStack() as stack:
        if train_data is None:
            train_data, val_data = open_loaders(cfg)
            stack.callback(train_data.close)
            stack.callback(val_data.close)
        classes = list(train_data.classes)
        if cfg.num_classes is not None and cfg.num_classes != len(classes):
            raise ValueError(
                f"{cfg.manifests}: data has {len(classes)} classes, config says {cfg.num_classes}"
            )
        cfg = cfg.replace(num_classes=len(classes))
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        if rank == 0:
            stack.enter_context(log_to(cfg.run_dir / TRAIN_LOG))
            _log_ranks(cfg, world)
        # Same parameter and accumulator names in every run, so a saved optimiser state loads.
        stack.enter_context(unique_name.guard())
        try:
            return _fit(cfg, state, to_resume, classes, train_data, val_data)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(resume_hint(cfg)) from None


def _fit(cfg, state, ckpt_path, classes, train_data, val_data) -> Path:
    run = cfg.run_dir
    paddle.seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    model = create_model(cfg.model, len(classes), cfg.shortcut, cfg.widths)
    if cfg.compile:  # same parameters and state-dict keys; forward runs as a static program
        model = paddle.jit.to_static(model, full_graph=True)
    opt, sched = build_optimizer(cfg, model)
    amp = Amp(cfg.amp)
    start, best = 0, -1.0
    if state is not None:
        ck.load_model_weights(model, state["model"], ckpt_path)
        opt.set_state_dict(state["optimizer"])
        sched.set_state_dict(state["scheduler"])
        if state["scaler"]:  # empty when the scaler was off (fp32, bf16, or fp16 on a CPU)
            amp.scaler.load_state_dict(state["scaler"])
        ck.set_rng_state(state["rng"])
        start, best = int(state["epoch"]), float(state["best_acc"])
        log.info("resumed %s at epoch %d (best val acc %.4f)", ckpt_path, start, best)
    main = dist.is_main()  # rank 0 alone writes the run's files
    net = dist.data_parallel(model, cfg.sync_bn)  # the model itself in a single process
    if main:
        write_json(run / CONFIG_JSON, cfg.to_dict())
        append_metrics(run / METRICS_JSONL, {}, keep_upto=start)
    sms = cfg.steps_loader_sms()  # SMs the steps leave to the NVDEC loader (0: all theirs)
    streams = {"kind": cfg.step_stream, "loader_sms": sms, "strict": cfg.loader_sms is not None}
    for epoch in range(start, cfg.epochs):
        steps = _epoch_len(train_data, cfg.max_steps)
        lr = opt.get_lr()
        with compute_stream(cfg.device, **streams):
            tr = train_one_epoch(
                net, opt, train_data.epoch(epoch), amp,
                epoch=epoch, log_every=cfg.log_every, max_steps=cfg.max_steps, total=steps,
            )  # fmt: skip
        tr = dist.merge_train(dist.all_gather(tr))  # every rank's clips, the same on all ranks
        dist.share_statistics(model)  # rank 0's BatchNorm statistics for validation and checkpoint
        record = {"epoch": epoch + 1, "lr": lr, **{f"train_{k}": v for k, v in tr.items()}}
        started = time.perf_counter() - tr["time_s"]
        if val_data is not None and ((epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs):
            with compute_stream(cfg.device, **streams):
                ev = evaluate(model, val_data.epoch(epoch), amp, max_steps=cfg.max_val_steps)
            ev = dist.gather_eval(ev)  # each rank scored its own videos
            record.update(val_loss=ev["loss"], val_acc=ev["acc"], val_time_s=ev["time_s"])
            if cfg.schedule == "plateau":
                sched.step(ev["loss"])
        if cfg.schedule == "multistep":
            sched.step()
        record["time_s"] = time.perf_counter() - started  # train + validation
        log.info("epoch %d: %s", epoch + 1, _fmt(record))
        if record.get("train_host_steal_pct", 0.0) >= STEAL_WARN_PCT:
            log.warning("epoch %d: this machine's hypervisor took %.1f %% of its busy CPU time: "
                        "training (and its loader) ran slower for it, not for the loader's "
                        "settings", epoch + 1, record["train_host_steal_pct"])  # fmt: skip
        if main:
            append_metrics(run / METRICS_JSONL, record)
        _check_finite(model, record)  # never save diverged weights as best or last
        is_best = record.get("val_acc", -1.0) > best
        best = max(best, record.get("val_acc", -1.0))
        ckpt_state = {
            "config": cfg.to_dict(), "classes": classes, "epoch": epoch + 1, "best_acc": best,
            "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "scaler": amp.scaler.state_dict(),
            "rng": ck.rng_state(), "metrics": record,
        }  # fmt: skip
        if (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs:
            dist.check_replicas(model)
            if main:
                ck.save_checkpoint(run / ck.LAST, ckpt_state)
        if is_best and main:
            ck.save_checkpoint(run / ck.BEST, ckpt_state)
    return run


def _check_finite(model: paddle.nn.Layer, record: dict[str, Any]) -> None:
    """RuntimeError if the epoch's losses or the model's weights are NaN or infinite."""
    for k in ("train_loss", "val_loss"):
        if k in record and not math.isfinite(record[k]):
            raise RuntimeError(
                f"epoch {record['epoch']}: {k} is {record[k]}; lower --lr or use fp32"
            )
    state = model.state_dict()
    # one flag per tensor, read in one go: a single wait for the device, not one per tensor
    finite = paddle.stack([paddle.isfinite(p).all() for p in state.values()]).numpy()
    bad = [n for n, ok in zip(state, finite, strict=True) if not ok]
    if bad:
        raise RuntimeError(
            f"epoch {record['epoch']}: weights hold NaN or inf ({', '.join(bad[:3])}); "
            "not saved; lower --lr or use fp32"
        )


def _log_ranks(cfg: TrainConfig, world: int) -> None:
    """Say how the batch is shared, and where the launcher's own logs went."""
    if world == 1:
        return
    log.info(
        "data parallel over %d ranks: global batch %d, %d per rank%s",
        world,
        cfg.batch_size,
        cfg.batch_size // world,
        ", SyncBatchNorm" if cfg.sync_bn else "",
    )
    logs, run = dist.launcher_log_dir(), cfg.run_dir.resolve()
    if logs is not None and not logs.is_relative_to(run):
        log.warning(
            "the launcher writes its logs to %s, outside the run directory; start it "
            "with --log_dir %s to keep them with the run",
            logs,
            run / "launch",
        )


def _epoch_len(data: Any, max_steps: int | None) -> int | None:
    try:
        n = len(data)
    except TypeError:
        return max_steps
    return n if max_steps is None else min(n, max_steps)


def _fmt(record: dict[str, Any]) -> str:
    keys = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "train_clips_per_s")
    return " ".join(f"{k} {record[k]:.4g}" for k in keys if k in record)
