"""bench feed's consumer where Paddle runs on the device: the project's own training step."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from bench.feed import Consumer, FeedConfig
from loader import ClipLoader


def paddle_consumer(cfg: FeedConfig) -> Consumer:
    """train.loop.train_step on a train.models model, fed through ClipLoader.epochs()."""
    import paddle

    from train.config import TrainConfig
    from train.device import compute_stream, gpu_device_id, use_device
    from train.loop import Amp, batch_inputs, train_step
    from train.models import create_model
    from train.run import build_optimizer

    lc = cfg.loader
    use_device(cfg.device)
    tc = TrainConfig(model=cfg.model, batch_size=lc.batch_size, device=cfg.device,
                     amp=cfg.amp if cfg.device == "gpu" else "none")  # fmt: skip
    model = create_model(tc.model, 101, tc.shortcut, tc.widths)
    opt, _ = build_optimizer(tc, model)
    amp = Amp(tc.amp)
    rng = np.random.default_rng(0)
    shape = (lc.batch_size, 3, lc.clip_len, lc.size, lc.size)  # (N, C, T, H, W)
    fixed = (
        paddle.to_tensor(rng.normal(0, 50, shape).astype(lc.dtype)),
        paddle.to_tensor(rng.integers(0, 101, lc.batch_size).astype(np.int64)),
    )

    def step(x: Any, y: Any) -> None:
        train_step(model, opt, amp, x, y)

    def fence() -> Callable[[], None]:
        if cfg.device != "gpu":
            return lambda: None  # CPU steps run synchronously
        event = paddle.device.Event()
        event.record()
        return event.synchronize

    def batches(loader: ClipLoader, epochs: Iterable[int]) -> Iterator[tuple[Any, Any]]:
        for batch in loader.epochs(epochs):
            yield batch_inputs(batch, amp)

    def stream(loader_sms: int) -> contextlib.AbstractContextManager:
        return compute_stream(cfg.device, cfg.stream, loader_sms, cfg.sm_fine)

    def partition() -> dict:
        from loader.greenctx import shared_partition

        return shared_partition(gpu_device_id(), cfg.loader_sms, cfg.sm_fine).summary()

    def mark() -> Any:
        event = paddle.device.Event(enable_timing=True)
        event.record()
        return event

    name = f"paddle {paddle.__version__} train.loop.train_step ({cfg.device})"
    return Consumer(name, step, fence, batches, fixed, stream, partition,
                    mark if cfg.device == "gpu" else None)  # fmt: skip
