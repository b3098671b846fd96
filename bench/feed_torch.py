"""bench feed's stand-in consumer: a PyTorch R3D-18 of Hara's layout, for GPUs Paddle cannot use.

Not part of the project's training: it exists because no CUDA build of Paddle runs on the machine
the GPU figures come from (FINDINGS.md). torch is imported only here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from bench.feed import Consumer, FeedConfig
from loader import ClipLoader
from loader.backend import Frames
from loader.bridge import Holder
from loader.handover import clip_sources, crop_resize_into, frame_parts, normalize_into, use_kernel
from loader.staging import (
    GRAPH_INPUTS,
    HANDOVER_PRIORITY,
    REST_PRIORITY,
    InputSlots,
    StreamOrder,
    handover_place,
    one_ahead,
)


def _r3d18(num_classes: int = 101) -> Any:
    import torch.nn as nn
    import torch.nn.functional as F

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.c1 = nn.Conv3d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm3d(cout)
            self.c2 = nn.Conv3d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm3d(cout)
            self.sc = None
            if stride != 1 or cin != cout:
                self.sc = nn.Sequential(nn.Conv3d(cin, cout, 1, stride, bias=False),
                                        nn.BatchNorm3d(cout))  # fmt: skip

        def forward(self, x: Any) -> Any:
            y = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
            return F.relu(y + (x if self.sc is None else self.sc(x)))

    class R3D18(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            conv1 = nn.Conv3d(3, 64, 7, (1, 2, 2), 3, bias=False)
            self.stem = nn.Sequential(conv1, nn.BatchNorm3d(64), nn.ReLU(), nn.MaxPool3d(3, 2, 1))
            layers, cin = [], 64
            for cout, s in ((64, 1), (128, 2), (256, 2), (512, 2)):
                layers += [Block(cin, cout, s), Block(cout, cout, 1)]
                cin = cout
            self.layers = nn.Sequential(*layers)
            self.fc = nn.Linear(512, num_classes)

        def forward(self, x: Any) -> Any:  # (N, C, T, H, W)
            x = self.layers(self.stem(x))
            return self.fc(F.adaptive_avg_pool3d(x, 1).flatten(1))

    return R3D18()


_CONSTANTS: dict[tuple, tuple[Any, Any]] = {}  # (device, mean, std, dtype) -> mean, 1/std or None


def to_torch(output: Any, n: int, cfg: Any, out: Any = None) -> Any:
    """The loader's DALI output(s) as one normalised (N, 3, T, H, W) CUDA tensor (cf. bridge);
    written into `out` (a graphed step's input) where given and of the same shape.

    With cfg.handover "kernel" (where the driver can run it), uint8 clips are normalised by the
    kernel loader.bridge gives Paddle (loader.handover), writing channels-last instead of planar.
    Else ("ops") by PyTorch's ops, as loader.bridge.normalize does with Paddle's, kernel for
    kernel (one cast, the subtraction, the division only where some std is not 1, all in
    cfg.dtype), so the stand-in's hand-over costs what Paddle's does; only the uint8 transpose is
    a free view here (channels-last). Their mean and 1/std live on the device from the first
    batch on: made per batch (`torch.tensor(..., device="cuda")`), each was a copy from pageable
    memory, which PyTorch synchronises with the current stream, i.e. the host waited for every
    step queued on the training stream, twice a batch (docs/BENCHMARKS.md, "Fourth round").
    Nothing here waits for the GPU.
    """
    import torch

    if isinstance(output, Frames):  # whole NVDEC frames: the kernel crops them (gpu_resize)
        return _cropped(output, n, cfg, getattr(torch, cfg.dtype), out)
    parts = []
    for o in output if isinstance(output, list) else [output]:
        t = torch.from_dlpack(o.as_tensor() if hasattr(o, "as_tensor") else o)
        parts.append(t if t.is_cuda else t.cuda())
    dtype = getattr(torch, cfg.dtype)
    if cfg.clip_output() == "uint8" and use_kernel(cfg.handover):
        return _by_kernel(parts, n, cfg, dtype, out)
    x = (parts[0] if len(parts) == 1 else torch.cat(parts))[:n]
    if cfg.clip_output() != "uint8":
        return x.contiguous(memory_format=torch.channels_last_3d)
    key = (x.device, tuple(cfg.mean), tuple(cfg.std), dtype)
    if key not in _CONSTANTS:
        mean = torch.tensor(cfg.mean, device=x.device).view(1, 3, 1, 1, 1).to(dtype)
        inv_std = None
        if any(s != 1 for s in cfg.std):
            inv_std = (1 / torch.tensor(cfg.std, device=x.device).view(1, 3, 1, 1, 1)).to(dtype)
        _CONSTANTS[key] = (mean, inv_std)
    mean, inv_std = _CONSTANTS[key]
    # (N, T, H, W, C) viewed as (N, C, T, H, W) is channels-last-3d already: no copy
    x = x.permute(0, 4, 1, 2, 3).to(dtype)
    if out is not None and out.shape == x.shape:
        x = torch.sub(x, mean, out=out)  # no copy into the graph's input afterwards
    else:
        x = x.sub_(mean)
    return x if inv_std is None else x.mul_(inv_std)


def _by_kernel(parts: list, n: int, cfg: Any, dtype: Any, out: Any) -> Any:
    """uint8 (N, T, H, W, 3) chunks -> (n, 3, T, H, W) channels-last `dtype`, one kernel per
    chunk on the current stream (loader.handover), into `out` where it has that form."""
    import torch

    t, h, w = parts[0].shape[1:4]
    out = _channels_last(out, (n, 3, t, h, w), dtype, parts[0].device)
    dense = [p.contiguous() for p in parts]  # (DALI's are): held until the kernels are queued
    stream = torch.cuda.current_stream().cuda_stream
    normalize_into([(p.data_ptr(), p.shape[0]) for p in dense], n, out.data_ptr(), t * h * w,
                   cfg.mean, cfg.std, cfg.dtype, False, stream)  # fmt: skip
    return out


def _channels_last(out: Any, shape: tuple[int, ...], dtype: Any, device: Any) -> Any:
    """`out` where it is an (N, C, T, H, W) `shape` tensor of `dtype` in channels-last memory
    (a graphed step's input), else a new one."""
    import torch

    if (out is not None and tuple(out.shape) == shape and out.dtype == dtype
            and out.is_contiguous(memory_format=torch.channels_last_3d)):  # fmt: skip
        return out
    n, c, t, h, w = shape
    return torch.empty((n, t, h, w, c), dtype=dtype, device=device).permute(0, 4, 1, 2, 3)


def _cropped(frames: Frames, n: int, cfg: Any, dtype: Any, out: Any) -> Any:
    """Whole uint8 NVDEC frames -> (n, 3, T, size, size) channels-last `dtype`, cropped, resized,
    flipped and normalised by one kernel per 32 clips (loader.handover.crop_resize_into), into
    `out` where it has that form (as loader.bridge._cropped does for Paddle, planar)."""
    import torch

    parts = [torch.from_dlpack(p) for c in frames.chunks for p in frame_parts(c)]
    sources = clip_sources([(p.data_ptr(), tuple(p.shape)) for p in parts], n)
    out = _channels_last(out, (n, 3, sources[0][1], cfg.size, cfg.size), dtype, parts[0].device)
    stream = torch.cuda.current_stream().cuda_stream
    crop_resize_into(sources, frames.rois[:n], cfg.size, out.data_ptr(), cfg.mean, cfg.std,
                     cfg.dtype, False, stream)  # fmt: skip
    return out


def torch_consumer(cfg: FeedConfig) -> Consumer:
    import torch
    import torch.nn.functional as F

    if cfg.device != "gpu" or not torch.cuda.is_available():
        raise RuntimeError("the PyTorch stand-in consumer needs a CUDA GPU (--device gpu)")
    if cfg.model != "r3d18":
        raise ValueError("the PyTorch stand-in is R3D-18 only")
    lc = cfg.loader
    torch.backends.cudnn.benchmark = True
    model = _r3d18().cuda().to(memory_format=torch.channels_last_3d)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-3)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
    priority = -1 if cfg.stream == "high" else 0  # as Paddle's 1 / 2 (train.device._step_stream)
    side = (torch.cuda.Stream(priority=priority) if cfg.stream != "default"
            else torch.cuda.current_stream())  # fmt: skip
    shape = (lc.batch_size, 3, lc.clip_len, lc.size, lc.size)

    def eager(x: Any, y: Any) -> None:
        if dtype is None and x.dtype != torch.float32:
            x = x.float()  # as train.loop.batch_inputs does without mixed precision
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with torch.cuda.stream(side):
        fixed = (torch.randn(shape, device="cuda", dtype=getattr(torch, lc.dtype))
                 .contiguous(memory_format=torch.channels_last_3d),
                 torch.randint(0, 101, (lc.batch_size,), device="cuda"))  # fmt: skip
    step, into = eager, []
    if cfg.graph:  # the graph's own input is the resident batch: the step alone copies nothing
        # batches handed over ahead are written while the steps before run: inputs in turn
        turns = GRAPH_INPUTS if lc.stages_handover() else 1
        step, inputs = _graphed(eager, model, opt, fixed, dtype, turns)
        fixed, into = inputs[0], [x for x, _ in inputs]

    def fence() -> Callable[[], None]:
        event = torch.cuda.Event()
        event.record()
        return event.synchronize

    holder = Holder(torch.cuda.Event)  # DALI buffers live until the side stream is done

    def partition(loader_sms: int) -> Any:
        from loader.greenctx import shared_partition

        return shared_partition(torch.cuda.current_device(), loader_sms, cfg.sm_fine)

    @functools.cache  # made on first use, after the partition
    def handover_stream() -> Any:
        """The stream batches are handed over on ahead (LoaderConfig.handover_stream, "side" or
        "rest"; loader.staging): a high-priority one in the training's partition where it has
        one, or ("rest") one on the SMs that partition leaves to the loader."""
        sms = cfg.steps_loader_sms()
        place = handover_place(lc.handover_stream, bool(sms))
        if place == "rest":
            return torch.cuda.ExternalStream(partition(sms).rest_stream(REST_PRIORITY))
        if place == "partition":
            return torch.cuda.ExternalStream(partition(sms).stream(HANDOVER_PRIORITY))
        return torch.cuda.Stream(priority=HANDOVER_PRIORITY)

    def stream(loader_sms: int) -> Any:
        """The side stream, or (loader_sms) a stream in a green context leaving those SMs free."""
        if not loader_sms:
            return torch.cuda.stream(side)
        green = torch.cuda.ExternalStream(partition(loader_sms).stream(priority))
        green.wait_stream(side)
        return torch.cuda.stream(green)

    def labels(batch: Any) -> Any:
        return torch.as_tensor(batch.labels).pin_memory().cuda(non_blocking=True) % 101

    def batches(loader: ClipLoader, epochs: Iterable[int]) -> Iterator[tuple[Any, Any]]:
        if lc.stages_handover():  # one batch ahead on a stream of its own (loader.staging),
            slots.restart()  # across epochs too (the footage's epochs are one batch each)
            yield from one_ahead(loader.raw_epochs(epochs), stage, ready)
            return
        for clips, batch in loader.raw_epochs(epochs):
            x = to_torch(clips, len(batch), lc, into[0] if into else None)
            holder.hold(clips, on_gpu=True)
            yield x, labels(batch)

    order, slots = StreamOrder(torch.cuda.Event), InputSlots()  # for the whole run, not an epoch

    def stage(pair: tuple[Any, Any]) -> tuple[Any, Any, Any]:
        """Queue the batch's hand-over on the hand-over stream, after the step before last
        (loader.staging: the memory it writes may be that step's until it is done)."""
        clips, batch = pair
        training, hand = torch.cuda.current_stream(), handover_stream()
        order.staging(hand, training)
        out = into[slots.stage()] if into else None
        with torch.cuda.stream(hand):
            x, y = to_torch(clips, len(batch), lc, out), labels(batch)
            holder.hold(clips, on_gpu=True)  # until the hand-over stream is past this kernel
            done = torch.cuda.Event()
            done.record()
        for t in (x, y):  # not reused before the step has read them
            t.record_stream(training)
        return x, y, done

    def ready(item: tuple[Any, Any, Any]) -> tuple[Any, Any]:
        x, y, done = item
        if into:
            slots.hand()
        order.handing(done, torch.cuda.current_stream(), (x, y))
        return x, y

    def mark() -> Any:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    kind = "CUDA-graphed " if cfg.graph else ""
    name = (f"torch {torch.__version__} {kind}R3D-18 stand-in (Hara layout, channels-last): "
            "no CUDA build of Paddle on this machine")  # fmt: skip
    return Consumer(name, step, fence, batches, fixed, stream,
                    lambda: partition(cfg.loader_sms).summary(), mark,
                    lambda run, steps: _profile(run, steps, cfg.profile_trace))  # fmt: skip


def _profile(run: Callable[[], None], steps: int, keep: Path | None = None) -> dict:
    """Run the steps under the PyTorch profiler (CUDA activity: every kernel and copy of the
    process, DALI's included) and summarise them (bench.kernels); `keep`: also write the whole
    trace there (gzipped Chrome trace JSON), to see what ran when."""
    import gzip
    import json
    import shutil
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    from bench.kernels import summarize

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run()
    with tempfile.TemporaryDirectory(prefix="ucf3d-profile-") as tmp:
        path = f"{tmp}/trace.json"
        prof.export_chrome_trace(path)
        with open(path) as f:
            trace = json.load(f)
        if keep is not None:
            with open(path, "rb") as f, gzip.open(keep, "wb") as out:
                shutil.copyfileobj(f, out)
    return summarize(trace, steps)


def _graphed(eager: Callable, model: Any, opt: Any, fixed: tuple, dtype: Any,
             inputs: int = 1) -> tuple[Callable, list[tuple]]:  # fmt: skip
    """The whole step as a CUDA graph, and the graph's inputs: `inputs` (clips, labels) pairs,
    one graph each (batches handed over ahead are written into one while the steps on the
    others run: loader.staging.GRAPH_INPUTS), the first of them the resident batch.

    The step replays the graph of the input it is given; other tensors are copied into the first
    input first (batches normalised into an input by to_torch are not: they are there already, as
    the resident batch is). The graphs share one memory pool: they never replay at once (one
    stream at a time, each replay self-contained: its gradients are made and used within it).

    A graph is captured on the stream it first runs on, one graph per stream and input: a graph's
    kernels keep the context they were captured in, so a graph captured in the primary context and
    replayed on a green context's stream runs on every SM, partition or not (rounds four to nine
    captured it on the side stream: their "graphed step on the partition" had the whole GPU, which
    is why it lost nothing to the partition, even at 116 SMs). Warming up on that stream first
    also lets cuDNN pick kernels that launch on the partition's SMs.
    """
    import torch
    import torch.nn.functional as F

    pairs = [(fixed[0].clone(), fixed[1].clone()) for _ in range(inputs)]
    graphs: dict[tuple[int, int], Any] = {}  # (capturing stream's handle, input) -> its graph
    pool: list[Any] = []  # the graphs' shared memory pool, from the first capture on

    def capture(sx: Any, sy: Any) -> Any:
        stream = torch.cuda.current_stream()
        for _ in range(5):
            eager(sx, sy)
        graph = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)
        # thread-local: the loader's threads may be calling CUDA meanwhile
        with torch.cuda.graph(graph, pool=pool[0] if pool else None, stream=stream,
                              capture_error_mode="thread_local"):  # fmt: skip
            with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None,
                                cache_enabled=False):  # fmt: skip
                loss = F.cross_entropy(model(sx), sy)
            loss.backward()
            opt.step()
        pool[:] = [graph.pool()]
        return graph

    def step(x: Any, y: Any) -> None:
        if x.shape[0] != pairs[0][0].shape[0]:
            return eager(x, y)
        i = next((i for i, (sx, _) in enumerate(pairs) if x is sx), 0)
        sx, sy = pairs[i]
        if x is not sx:
            sx.copy_(x)
        if y is not sy:
            sy.copy_(y)
        key = (torch.cuda.current_stream().cuda_stream, i)
        if key not in graphs:
            graphs[key] = capture(sx, sy)
        graphs[key].replay()

    return step, pairs
