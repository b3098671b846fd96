"""Data parallelism on paddle.distributed: rank and world, DataParallel, per-epoch exchanges.

One process per device, started by `python -m paddle.distributed.launch`, which sets
PADDLE_TRAINER_ID / PADDLE_TRAINERS_NUM (and FLAGS_selected_gpus, the rank's GPU). Gradients are
averaged inside backward by paddle.DataParallel (NCCL on GPUs, gloo on CPUs); what else is
exchanged here goes once per epoch, never per step: BatchNorm statistics by broadcast, small
Python objects (metrics, eval logits, digests) through all_gather_object. Outside the launcher
every function is a no-op for a world of one.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import paddle

from train.metrics import clip_scores

log = logging.getLogger(__name__)


def world() -> tuple[int, int]:
    """(rank, world size) from the launcher's environment; (0, 1) outside it."""
    rank = int(os.environ.get("PADDLE_TRAINER_ID", 0))
    return rank, int(os.environ.get("PADDLE_TRAINERS_NUM", 1))


def is_main() -> bool:
    """Rank 0: the one process that writes run files (checkpoints, metrics, logs, eval output)."""
    return world()[0] == 0


def init() -> tuple[int, int]:
    """Join the launcher's process group (once) when there is more than one rank."""
    rank, size = world()
    if size > 1 and not paddle.distributed.is_initialized():
        paddle.distributed.init_parallel_env()  # gloo on a CPU build, NCCL on GPUs
        log.info("rank %d of %d joined the process group", rank, size)
    return rank, size


def local_batch(batch_size: int, size: int) -> int:
    """This rank's share of the global batch; a batch the ranks cannot share equally is refused."""
    if batch_size % size:
        raise ValueError(
            f"--batch-size {batch_size} is the global batch, split over {size} ranks; "
            f"it must be a multiple of {size} (e.g. {batch_size - batch_size % size or size})"
        )
    return batch_size // size


def threads_per_rank() -> int:
    """This machine's cores shared by the ranks the launcher started on it."""
    from loader.config import local_size  # the one reading of the launcher's variable

    return max(1, (os.cpu_count() or 1) // local_size())


def launcher_log_dir() -> Path | None:
    """Where paddle.distributed.launch writes its logs (its --log_dir), when under it."""
    d = os.environ.get("PADDLE_LOG_DIR")
    return Path(d).resolve() if d else None


def data_parallel(model: paddle.nn.Layer, sync_bn: bool = False) -> paddle.nn.Layer:
    """The layer to train: paddle.DataParallel over the ranks (model itself for one process).

    DataParallel copies rank 0's weights to every rank when built. sync_bn converts BatchNorm to
    SyncBatchNorm in place (statistics over the global batch); Paddle has no CPU kernel for it.
    """
    if world()[1] == 1:
        return model
    if sync_bn:
        if not paddle.get_device().startswith("gpu"):
            raise ValueError("--sync-bn needs GPUs: Paddle has no CPU kernel for SyncBatchNorm")
        model = paddle.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return paddle.DataParallel(model)


def all_gather(obj: Any) -> list[Any]:
    """Every rank's `obj` (picklable), in rank order, on every rank."""
    if world()[1] == 1:
        return [obj]
    out: list[Any] = []
    paddle.distributed.all_gather_object(out, obj)
    return out


def check_same(value: Any, what: str) -> None:
    """Raise on every rank if some rank's `value` differs from rank 0's (also a barrier)."""
    values = all_gather(value)
    odd = [r for r, v in enumerate(values) if v != values[0]]
    if odd:
        raise RuntimeError(
            f"{what} differs between ranks: rank 0 has {values[0]!r}, "
            + ", ".join(f"rank {r} {values[r]!r}" for r in odd)
        )


def share_statistics(model: paddle.nn.Layer) -> None:
    """Give every rank rank 0's BatchNorm running statistics (as PyTorch's DDP and Hara's
    single-process DataParallel do), so validation and checkpoints agree across ranks."""
    if world()[1] == 1:
        return
    frozen = [p for p in model.parameters() if p.stop_gradient] + list(model.buffers())
    for t in frozen:
        paddle.distributed.broadcast(t, src=0)


def check_replicas(model: paddle.nn.Layer) -> None:
    """Fail if any rank's weights are not bit-identical to rank 0's (data parallelism broken)."""
    if world()[1] == 1:
        return
    digest = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(t.numpy()).tobytes())
    check_same(digest.hexdigest(), "the model's weights (sha256)")
    log.info("weights bit-identical on all %d ranks", world()[1])


def merge_train(parts: list[dict[str, float]]) -> dict[str, float]:
    """One epoch's train_one_epoch results of all ranks as one: loss and accuracy over every
    clip, clips summed, the slowest rank's time, the largest data wait and host steal; `ranks`:
    how many."""
    if len(parts) == 1:
        return {**parts[0], "ranks": 1}
    clips = sum(p["clips"] for p in parts)
    time_s = max(p["time_s"] for p in parts)
    return {
        **parts[0],
        "ranks": len(parts),
        "loss": sum(p["loss"] * p["clips"] for p in parts) / clips,
        "acc": sum(p["acc"] * p["clips"] for p in parts) / clips,
        "clips": clips,
        "clips_per_s": clips / time_s,
        "data_wait_pct": max(p["data_wait_pct"] for p in parts),
        "time_s": time_s,
    } | _most("host_steal_pct", parts)


def _most(key: str, parts: list[dict[str, float]]) -> dict[str, float]:
    """{key: the largest of the parts' values} where some part has one, else {}."""
    values = [p[key] for p in parts if key in p]
    return {key: max(values)} if values else {}


def _video_runs(keys: list[str]) -> list[tuple[int, int]]:
    """(start, stop) of each run of equal consecutive keys: one video's clips."""
    runs, start = [], 0
    for i in range(1, len(keys) + 1):
        if i == len(keys) or keys[i] != keys[start]:
            runs.append((start, i))
            start = i
    return runs


def merge_eval(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """evaluate() results of all ranks as one, in the order one process would produce.

    The loader deals test videos round-robin (rank r holds videos r, r+W, r+2W, ... of the
    manifest, each video's clips together), so taking one video from each rank in turn restores
    the manifest order; loss and accuracy are then computed as evaluate() does.
    """
    if len(parts) == 1:
        return parts[0]
    runs = [_video_runs(p["keys"]) for p in parts]
    order = [
        (rank, *r[j])
        for j in range(max(len(r) for r in runs))
        for rank, r in enumerate(runs)
        if j < len(r)
    ]
    logits = np.concatenate([parts[k]["logits"][a:b] for k, a, b in order])  # (N, K)
    labels = np.concatenate([parts[k]["labels"][a:b] for k, a, b in order])  # (N,)
    keys = [key for k, a, b in order for key in parts[k]["keys"][a:b]]
    return clip_scores(logits, labels, keys, max(p["time_s"] for p in parts))


def gather_eval(ev: dict[str, Any]) -> dict[str, Any]:
    """This rank's evaluate() result -> every rank's, merged (the same on every rank)."""
    return merge_eval(all_gather(ev))
