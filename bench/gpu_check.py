"""GPU-machine checks of the NVDEC backend that need no Paddle: GPU vs CPU clips, DLPack, order.

    python bench/gpu_check.py --manifests M --shards S [--split 1] [--batches 4] [--only segments]

Prints one JSON line per check. For each mode (train, clip, video) the same plan is decoded by
the CPU backend (libavcodec) and the GPU backend (NVDEC); keys must match exactly and pixels within
codec/resampler tolerance. DLPack hand-over is checked for zero copy with PyTorch, where present,
as a stand-in consumer (the bridge hands the same capsule to Paddle).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loader import ClipLoader, LoaderConfig  # noqa: E402
from loader.backend import Frames  # noqa: E402


def _dense(out: object, n: int, size: int = 112) -> np.ndarray:
    """(n, T, size, size, 3) uint8 clips of a batch; whole frames (gpu_resize "kernel") are
    cropped by the stand-in's hand-over kernel first (float32, mean 0, std 1: the values)."""
    if isinstance(out, Frames):
        import torch

        from bench.feed_torch import to_torch

        cfg = SimpleNamespace(mean=(0.0,) * 3, std=(1.0,) * 3, dtype="float32", size=size,
                              handover="kernel", clip_output=lambda: "uint8")  # fmt: skip
        x = to_torch(out, n, cfg).permute(0, 2, 3, 4, 1)
        return x.round().clamp(0, 255).to(torch.uint8).cpu().numpy()
    parts = out if isinstance(out, list) else [out]
    arrays = [np.asarray(p.as_cpu().as_array() if hasattr(p, "as_cpu") else p.as_array())
              for p in parts]
    return np.concatenate(arrays)[:n]


def compare(args: argparse.Namespace, mode: str, other: str = "gpu") -> dict:
    """The CPU backend against `other` (gpu or hybrid) on the same plan, uint8 pixels."""
    clips: dict[str, list] = {}
    for decode in ("cpu", other):
        cfg = LoaderConfig(manifests=args.manifests, shards=args.shards, split=args.split,
                           subset="train", mode=mode, batch_size=32, num_threads=8,
                           decode=decode, seed=3, start_align=1, cache_dir=args.cache,
                           output="uint8", cpu_share=0.3)
        with ClipLoader(cfg) as loader:
            got = []
            for i, (out, batch) in enumerate(loader.raw_epoch(1)):
                got.append((batch.keys, batch.requests["start"].copy(), _dense(out, len(batch))))
                if i + 1 >= args.batches:
                    break
            clips[decode] = got
    diffs, maxes = [], []
    for (kc, sc, c), (kg, sg, g) in zip(clips["cpu"], clips[other], strict=True):
        assert kc == kg and (sc == sg).all(), "GPU and CPU backends returned different requests"
        assert c.shape == g.shape, (c.shape, g.shape)
        d = np.abs(c.astype(np.float32) - g.astype(np.float32))
        diffs.append(float(d.mean()))
        maxes.append(float(np.percentile(d, 99.9)))
    return {"check": f"{other}_vs_cpu", "mode": mode, "batches": len(diffs),
            "clip_shape": list(clips[other][0][2].shape[1:]),
            "mean_abs_diff": round(float(np.mean(diffs)), 4),
            "p99.9_abs_diff": round(float(np.max(maxes)), 3),
            "same_keys_and_starts": True}


def resize(args: argparse.Namespace, mode: str) -> dict:
    """The hand-over kernel's crop and resize (gpu_resize "kernel", from whole NVDEC frames)
    against DALI's fn.resize, on the same plan and the same decoder: the clips handed to the
    stand-in (loader.handover; float32, mean 0, std 1: the pixel values themselves)."""
    from bench.feed_torch import to_torch

    got: dict[str, list] = {}
    for how in ("dali", "kernel"):
        cfg = LoaderConfig(manifests=args.manifests, shards=args.shards, split=args.split,
                           subset="train", mode=mode, batch_size=32, decode="gpu", seed=3,
                           start_align=1, cache_dir=args.cache, gpu_pipelines=4,
                           gpu_resize=how, dtype="float32", mean=(0, 0, 0), std=(1, 1, 1))
        with ClipLoader(cfg) as loader:
            assert loader.backend.resize == how, (how, loader.backend.resize)
            seen = []
            for i, (out, batch) in enumerate(loader.raw_epoch(1)):
                x = to_torch(out, len(batch), cfg)
                seen.append((batch.keys, x.float().cpu().numpy()))
                if i + 1 >= args.batches:
                    break
        got[how] = seen
    worst, equal, values = 0.0, 0, 0
    for (kd, d), (kk, k) in zip(got["dali"], got["kernel"], strict=True):
        assert kd == kk and d.shape == k.shape, (d.shape, k.shape)
        diff = np.abs(d - k)
        worst = max(worst, float(diff.max()))
        equal += int((diff == 0).sum())
        values += diff.size
    return {"check": "resize_kernel_vs_dali", "mode": mode, "batches": len(got["dali"]),
            "clip_shape": list(got["kernel"][0][1].shape[1:]), "max_abs_diff": worst,
            "share_equal": round(equal / values, 6)}


def dlpack(args: argparse.Namespace) -> dict:
    cfg = LoaderConfig(manifests=args.manifests, shards=args.shards, split=args.split,
                       batch_size=16, decode="gpu", cache_dir=args.cache, gpu_pipelines=1,
                       gpu_resize="dali")  # DALI's cropped clips, handed over as they are
    with ClipLoader(cfg) as loader:
        out, _ = next(iter(loader.raw_epoch(0)))
        dense = out[0].as_tensor()
        try:
            import torch
        except ImportError:
            return {"check": "dlpack", "skipped": "no torch here"}
        t = torch.from_dlpack(dense)
        same = t.data_ptr() == dense.data_ptr()
        ref = np.asarray(out[0].as_cpu().as_array())
        equal = bool(np.array_equal(t.cpu().numpy(), ref))
        return {"check": "dlpack", "consumer": f"torch {torch.__version__}",
                "device": str(t.device), "zero_copy": same, "values_equal": equal,
                "shape": list(t.shape), "dtype": str(t.dtype)}


def segments(args: argparse.Namespace) -> dict:
    """Many epochs through small segments: every hand-over keeps plan order (checked per chunk),
    and each segment done with is shut down by the retiring thread (loader.gpu)."""
    kw = dict(manifests=args.manifests, shards=args.shards, split=args.split, batch_size=64,
              seed=5, cache_dir=args.cache)
    gpu = LoaderConfig(decode="gpu", gpu_segment_clips=500, gpu_pipelines=5, **kw)
    cpu = LoaderConfig(decode="cpu", num_threads=8, output="uint8", **kw)
    clips = 0
    with ClipLoader(gpu) as loader:
        backend = loader.backend
        for epoch in range(8):  # 216-clip epochs: segments of 3, so two boundaries
            for out, batch in loader.raw_epoch(epoch):
                planned = loader.batches(epoch)[batch.number]
                assert batch.keys == planned.keys, "keys out of plan order"
                clips += len(batch)
                if epoch == 7 and batch.number == 3:
                    last = (batch.keys, _dense(out, len(batch)))
    report = backend.segment_report()  # after close: every shut-down done
    built = report["segments"]
    assert len(built) >= 3 and not built[0]["background"], built
    assert all(b["background"] for b in built[1:]), built
    assert report["retire_s"] > 0, report
    with ClipLoader(cpu) as loader:
        for out, batch in loader.raw_epoch(7):
            if batch.number == 3:
                ref = _dense(out, len(batch))
                assert batch.keys == last[0]
                break
    return {"check": "segments", "epochs": 8, "clips": clips, "segment_clips": 500,
            "pipelines": 5, "mean_abs_diff_vs_cpu_epoch7": round(float(
                np.abs(ref.astype(np.float32) - last[1].astype(np.float32)).mean()), 4),
            "nvdec_segments": report}


def staging(args: argparse.Namespace) -> dict:
    """The hand-over one batch ahead (loader.staging), on the step's SMs ("side") or on the loader's
    ("rest"), gives the stand-in's steps the same batches, bit for bit, as on the training
    stream, with steps running: eager and graphed (three inputs in turn,
    loader.staging.GRAPH_INPUTS), over three epochs run back to back (staged across their
    boundaries). Each batch is summed on the training stream where the step reads it; nothing
    here waits for the GPU, so the host runs ahead and a hand-over that wrote an input before
    the steps reading it were done would change a sum."""
    import torch

    from bench.feed import FeedConfig
    from bench.feed_torch import torch_consumer

    sums: dict[str, list[float]] = {}
    for where, graph in itertools.product(("step", "side", "rest"), (False, True)):
        cfg = LoaderConfig(manifests=args.manifests, shards=args.shards, split=args.split,
                           batch_size=64, decode="gpu", seed=7, cache_dir=args.cache,
                           dtype="float16", gpu_pipelines=4, handover_stream=where)  # fmt: skip
        feed = FeedConfig(loader=cfg, consumer="torch", graph=graph, loader_sms=2)
        consumer = torch_consumer(feed)
        got = []
        with consumer.stream(2), ClipLoader(cfg) as loader:
            for i, (x, y) in enumerate(consumer.batches(loader, [1, 2, 3])):
                got.append(x.double().sum())  # on the training stream, as the step reads x
                consumer.step(x, y)
                if i + 1 >= 3 * args.batches:
                    break
            torch.cuda.synchronize()
        sums[f"{where}{'-graph' if graph else ''}"] = [float(v) for v in got]
    first = sums["step"]
    same = {k: v == first for k, v in sums.items()}
    assert all(same.values()), same
    return {"check": "staging", "batches": len(first), "identical": same}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifests", type=Path, required=True)
    ap.add_argument("--shards", type=Path, required=True)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/ucf3d-cache"))
    ap.add_argument("--split", type=int, default=1)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--only", choices=["segments", "resize", "staging"],
                    help="run this check alone")
    args = ap.parse_args()
    t0 = time.time()
    if args.only in (None, "staging"):
        print(json.dumps(staging(args)), flush=True)
    if args.only == "staging":
        return
    if args.only in (None, "resize"):
        for mode in ("train", "clip", "video"):
            print(json.dumps(resize(args, mode)), flush=True)
    if args.only == "resize":
        return
    if not args.only:
        print(json.dumps(dlpack(args)), flush=True)
        for mode in ("train", "clip", "video"):
            print(json.dumps(compare(args, mode)), flush=True)
        print(json.dumps(compare(args, "train", other="hybrid")), flush=True)
    print(json.dumps(segments(args)), flush=True)
    print(json.dumps({"check": "done", "seconds": round(time.time() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
