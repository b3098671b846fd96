"""Training as plain functions: one step, one epoch (train_one_epoch), evaluate; train.run.fit runs
them over a whole run."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import paddle
import paddle.nn.functional as F

from loader.hostmem import cpu_busy_steal, steal_pct
from train.metrics import clip_scores

log = logging.getLogger(__name__)

# Paddle's O1 white list has no conv3d: without it a 3D ResNet would run almost all in fp32.
AMP_WHITE_LIST = {"conv3d", "matmul_v2", "matmul"}


class ClipSource(Protocol):
    """What fit needs from a loader: class names and one iterable of batches per epoch."""

    classes: list[str]

    def epoch(self, index: int) -> Iterable[Any]: ...


@dataclass
class Amp:
    """Mixed precision: autocast context plus a GradScaler (enabled for fp16 only)."""

    mode: str = "none"  # none | fp16 | bf16

    def __post_init__(self) -> None:
        self.scaler = paddle.amp.GradScaler(enable=self.mode == "fp16", init_loss_scaling=2.0**15)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.mode == "none":
            return contextlib.nullcontext()
        dtype = "float16" if self.mode == "fp16" else "bfloat16"
        return paddle.amp.auto_cast(custom_white_list=AMP_WHITE_LIST, level="O1", dtype=dtype)


def batch_inputs(batch: Any, amp: Amp) -> tuple[paddle.Tensor, paddle.Tensor]:
    clips, labels = batch.clips, batch.labels  # (N, 3, T, H, W), (N,)
    if not isinstance(clips, paddle.Tensor):
        clips = paddle.to_tensor(np.asarray(clips))
    if not isinstance(labels, paddle.Tensor):
        labels = paddle.to_tensor(np.asarray(labels, dtype=np.int64))
    place = paddle.get_device()
    if place.startswith("gpu") and not labels.place.is_gpu_place():
        # asynchronous from the loader's pinned labels: no host sync per step
        labels = labels.cuda(blocking=False)
    if place.startswith("gpu") and not clips.place.is_gpu_place():
        clips = clips.cuda()
    elif place == "cpu" and not clips.place.is_cpu_place():
        clips, labels = clips.cpu(), labels.cpu()
    if amp.mode == "none" and clips.dtype != paddle.float32:
        clips = clips.astype("float32")
    return clips, labels.astype("int64").flatten()


def _loss(model: paddle.nn.Layer, clips: paddle.Tensor, labels: paddle.Tensor, amp: Amp):
    with amp.autocast():
        logits = model(clips)  # (N, classes)
    logits = logits.astype("float32")
    return F.cross_entropy(logits, labels), logits


def train_step(
    model: paddle.nn.Layer,
    optimizer: paddle.optimizer.Optimizer,
    amp: Amp,
    clips: paddle.Tensor,
    labels: paddle.Tensor,
) -> tuple[paddle.Tensor, paddle.Tensor]:
    """One SGD step on a batch already on the model's device: (loss, logits), not read back."""
    loss, logits = _loss(model, clips, labels, amp)
    amp.scaler.scale(loss).backward()
    amp.scaler.step(optimizer)
    amp.scaler.update()
    optimizer.clear_grad()
    return loss, logits


def train_one_epoch(
    model: paddle.nn.Layer,
    optimizer: paddle.optimizer.Optimizer,
    batches: Iterable[Any],
    amp: Amp,
    *,
    epoch: int = 0,
    log_every: int = 10,
    max_steps: int | None = None,
    total: int | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, float]:
    """One pass over `batches`: loss, acc, clips/s and the share of time spent waiting for data.

    The host never waits for a step to finish: loss and correct counts are summed on the device
    and read every `log_every` steps and at the end (reading is what synchronises), so the next
    batch is fetched while the GPU still computes. `on_step(step, loss)` reads every step's loss
    and so synchronises every step (tests use it). Data wait is the time the host spends blocked
    in the loader. `host_steal_pct` (Linux): the share of the machine's busy CPU time its
    hypervisor took meanwhile, which slows training whatever feeds it (docs/BENCHMARKS.md,
    "Fifteenth round").
    """
    model.train()
    loss_sum = correct = None  # device scalars: sums over the epoch
    clips_seen = steps = 0
    wait = 0.0
    host0 = cpu_busy_steal()
    start = tick = time.perf_counter()
    for step, batch in enumerate(batches):
        if max_steps is not None and step >= max_steps:
            break
        wait += time.perf_counter() - tick
        clips, labels = batch_inputs(batch, amp)
        loss, logits = train_step(model, optimizer, amp, clips, labels)
        n = int(labels.shape[0])
        hits = (logits.argmax(axis=1) == labels).astype("int64").sum()
        step_loss = loss.detach().astype("float64") * n
        loss_sum = step_loss if loss_sum is None else loss_sum + step_loss
        correct = hits if correct is None else correct + hits
        steps += 1
        clips_seen += n
        if on_step is not None:
            on_step(step, _finite(loss, epoch, step))
        tick = time.perf_counter()
        if (step + 1) % log_every == 0:
            mean_loss = _finite(loss_sum, epoch, step) / clips_seen
            tick = time.perf_counter()  # reading the sums waited for the GPU: not data wait
            log.info(
                "epoch %d step %d/%s loss %.4f acc %.3f lr %.2e clips/s %.1f data %.0f%%",
                epoch + 1, step + 1, total or "?", mean_loss, int(correct) / clips_seen,
                optimizer.get_lr(), clips_seen / (tick - start), 100 * wait / (tick - start),
            )  # fmt: skip
    if steps == 0:
        raise RuntimeError(f"epoch {epoch}: the training loader yielded no batches")
    mean_loss = _finite(loss_sum, epoch, steps - 1) / clips_seen
    acc = int(correct) / clips_seen
    elapsed = time.perf_counter() - start
    out = {
        "loss": mean_loss,
        "acc": acc,
        "clips": clips_seen,
        "clips_per_s": clips_seen / elapsed,
        "data_wait_pct": 100 * wait / elapsed,
        "time_s": elapsed,
    }
    stolen = steal_pct(host0, cpu_busy_steal())  # a hypervisor pausing the CPUs stalls training
    if stolen is not None:
        out["host_steal_pct"] = round(stolen, 2)
    return out


def _finite(value: paddle.Tensor, epoch: int, step: int) -> float:
    """A device scalar read on the host (this synchronises), refused when not finite."""
    v = float(value)
    if not math.isfinite(v):
        raise RuntimeError(f"epoch {epoch} step {step}: loss is {v}; lower --lr or use fp32")
    return v


@paddle.no_grad()
def evaluate(
    model: paddle.nn.Layer,
    batches: Iterable[Any],
    amp: Amp | None = None,
    *,
    max_steps: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Logits of every clip: loss, clip accuracy and (N, K) logits, labels and video keys."""
    amp = amp or Amp()
    model.eval()
    logits_all, labels_all, keys = [], [], []
    start = time.perf_counter()
    for step, batch in enumerate(batches):
        if max_steps is not None and step >= max_steps:
            break
        clips, labels = batch_inputs(batch, amp)
        _, logits = _loss(model, clips, labels, amp)
        logits_all.append(logits.numpy())
        labels_all.append(labels.numpy())
        keys.extend(batch.keys)
        if progress is not None:
            progress(len(batch.keys))
    if not logits_all:
        raise RuntimeError("the evaluation loader yielded no batches")
    logits, labels = np.concatenate(logits_all), np.concatenate(labels_all)
    bad = int((~np.isfinite(logits).all(axis=1)).sum())
    if bad:  # argmax of NaN is 0: it would score as a (wrong or right) prediction
        raise RuntimeError(
            f"{bad} of {len(logits)} clips got non-finite logits (NaN or inf): the model's "
            "weights have diverged or are corrupt; lower --lr or use fp32"
        )
    return clip_scores(logits, labels, keys, time.perf_counter() - start)
