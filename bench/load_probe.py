"""What slows the NVDEC loader beside training? The loader's rate under different GPU loads.

    python -m bench.load_probe --manifests M --shards S [--seconds 12] > probe.jsonl

The loader runs in the main thread as fast as it can (clips handed to PyTorch and synchronised on
the consumer's stream every batch, so a batch counts only when its clips exist), while a background
thread keeps one kind of GPU load running; each phase prints one JSON line with the loader's
clips/s and the load's rate. Loads: none; the R3D-18 stand-in's training step (bench.feed_torch)
on every SM; the same step on a green context that leaves N SMs free (`train-leaveN`,
loader.greenctx); bf16 matrix products (compute-bound, long kernels); device-to-device copies
(memory-bound). If the
loader slows as much beside the partitioned step as beside the whole-GPU one, the SMs are not
what it waits for. A diagnostic for docs/BENCHMARKS.md, not a benchmark of record.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.feed import FeedConfig
from bench.feed_torch import to_torch, torch_consumer
from bench.measure import GpuSampler
from loader import ClipLoader, LoaderConfig


def _load(kind: str, consumer: Any) -> Callable[[threading.Event, list[int]], None]:
    """A background load: runs until `stop` is set, counting units of work in `done[0]`."""

    def train(stop: threading.Event, done: list[int], sms: int) -> None:
        with consumer.stream(sms):
            pending: list[Any] = []
            while not stop.is_set():
                consumer.step(*consumer.fixed)
                pending.append(consumer.fence())
                if len(pending) >= 2:
                    pending.pop(0)()
                done[0] += 1
            for wait in pending:
                wait()

    def loop(stop: threading.Event, done: list[int], op: Callable[[], None]) -> None:
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):
            while not stop.is_set():
                for _ in range(10):
                    op()
                side.synchronize()
                done[0] += 10

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    src = torch.empty(512 * 2**20, device="cuda", dtype=torch.uint8)
    dst = torch.empty_like(src)
    loads = {
        "train": lambda stop, done: train(stop, done, 0),
        "matmul": lambda stop, done: loop(stop, done, lambda: a @ a),
        "copy512MB": lambda stop, done: loop(stop, done, lambda: dst.copy_(src)),
    }
    if kind.startswith("train-leave"):  # the step on all but N SMs, split SM by SM
        sms = int(kind.removeprefix("train-leave"))
        return lambda stop, done: train(stop, done, sms)
    return loads[kind]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifests", type=Path, required=True)
    ap.add_argument("--shards", type=Path, required=True)
    ap.add_argument("--seconds", type=float, default=12.0)
    # train-leave20 before train: cuDNN keeps the kernels it picked first, and some picked on the
    # whole GPU cannot launch on a partition (docs/BENCHMARKS.md, "Second round"); the reverse holds
    # train-leaveN: the step on all but N SMs (SM by SM, as `ucf3d train --loader-sms N`): does
    # the loader beside the partitioned step make more than the step eats, and how much does the
    # step lose beside the loader (load_units_per_s x 128 clips against its rate alone)?
    ap.add_argument("--loads", default="none,train-leave2,train,matmul,copy512MB")
    a = ap.parse_args()
    lc = LoaderConfig(manifests=a.manifests, shards=a.shards, split=1, subset="train",
                      mode="train", batch_size=128, decode="gpu", dtype="float16")  # fmt: skip
    consumer = torch_consumer(FeedConfig(lc, consumer="torch"))  # cuDNN tunes in the first load
    hand = torch.cuda.Stream()
    with ClipLoader(lc) as loader:

        def batches() -> Any:
            epoch = 0
            while True:
                for clips, batch in loader.raw_epoch(epoch):
                    with torch.cuda.stream(hand):
                        x = to_torch(clips, len(batch), lc)
                        hand.synchronize()
                    yield int(x.shape[0])
                epoch += 1

        feed = batches()
        for _ in range(10):  # pipelines built and warm
            next(feed)
        for kind in a.loads.split(","):
            stop, done = threading.Event(), [0]
            worker = None
            if kind != "none":
                worker = threading.Thread(target=_load(kind, consumer), args=(stop, done))
                worker.start()
                time.sleep(3)  # the load settles (the first one also tunes cuDNN)
            clips, d0 = 0, done[0]
            with GpuSampler() as gpu:
                t0 = time.perf_counter()
                while time.perf_counter() - t0 < a.seconds:
                    clips += next(feed)
                wall = time.perf_counter() - t0
                work = done[0] - d0
            stop.set()
            if worker is not None:
                worker.join()
            print(json.dumps({"bench": "load_probe", "load": kind,
                              "loader_clips_per_s": round(clips / wall, 1),
                              "load_units_per_s": round(work / wall, 2), **gpu.summary()}),
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
