"""Would a reader of our own cost the training step less than DALI's? (a GPU probe)

    python -m bench.nvc_probe remux --manifests M --shards S --out DIR    # here: MP4 copies
    python -m bench.nvc_probe run --videos DIR [--threads 14] [--rate 2300] [--phases ...]

Beside DALI's NVDEC reader the eager step on its partition runs ~1 ms longer than alone, and the
partition itself costs it ~1 ms: together more than the 0.97 target leaves (docs/BENCHMARKS.md,
thirteenth and eighteenth rounds). The spill probe measured the first part as the number of
kernels the reader launches beside the step (~0.18 us each; DALI launches two a frame: the
driver's NV12 copy and its colour conversion, 4,096 a step). A reader that converts a clip's or
a batch's frames in one kernel would launch fewer. This probe measures one before anyone builds
it: NVIDIA's PyNvVideoCodec (PyPI; NVDEC through the Video Codec SDK, FFmpeg's demuxer, Python
threads) decodes Hara's windows, 16 frames at a random start of a random training video, in its
native NV12 (`--color native`: the frames copied out of the decoder's surfaces, nothing
converted) or converted to RGB by PyNvVideoCodec frame by frame (`rgb`, like DALI), and each
clip's frames are copied into one tensor by one kernel (torch.stack), standing in for the
hand-over kernel that would convert and crop them. The decoding threads take clips at `--rate`
clips a second (the training's pace, with margin); whatever they cannot keep up with shows as a
lower `decoded_per_s`.

Phases (`--phases`, comma-separated; `whole-` runs the step on every SM instead of the partition):
- `decode`: decoding alone, as fast as the threads go, `--seconds` long (`decode-1`: one thread);
- `none`: the stand-in's step alone on one resident batch (spill_probe.stand_in);
- `native`, `rgb`: the step beside the decoding threads at `--rate`, in that colour.

One JSON line per phase: the step's device ms (CUDA events) and clips/s (spill_probe.timed_steps),
the clips decoded a second meanwhile and the host cores the process used, the lock probe's
stalls (bench.measure.GilProbe: a reader that holds Python's lock stops the training thread), and
with `--profile-phase P` the kernels and copies of P per step (bench.kernels.summarize, the
trace kept with `--profile-trace`). PyTorch and PyNvVideoCodec only (the GPU machine has no
Paddle): a diagnostic, not a benchmark of record. Its threads and phases (ClipThreads,
run_phases) also drive bench.own_reader, our own reader's floor.

What it found on an H200 (docs/BENCHMARKS.md, "Nineteenth round"): PyNvVideoCodec 2.2.4 is not
that reader. Its threads decode 433 clips/s together (277 alone) with Python's lock taken, so the
eager step beside them took 1.3 s instead of 60 ms, and it maps and copies every decoded frame.

PyNvVideoCodec is not a dependency: `pip install PyNvVideoCodec` on the GPU machine (it needs
the driver's NVDEC library), or, where that machine has no registry, the wheel for its Python
unzipped into a folder on PYTHONPATH (docs/BENCHMARKS.md, "Nineteenth round", says how it ran).

Why MP4: PyNvVideoCodec's frame-indexed decoder (SimpleDecoder) needs the container's frame
count, which WebM does not record; `remux` copies the VP9 stream of every training video of the
split, unchanged, into MP4 (ffmpeg -c copy), and lists the copies with the manifest's frame counts
(`videos.jsonl`), which `run` checks against the container's.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.spill_probe import stand_in, timed_steps, warm_up

LISTING = "videos.jsonl"
CLIP_LEN = 16  # Hara's clip: 16 consecutive frames
COLORS = ("native", "rgb")


def training_videos(manifests: Path, shards: Path, split: int, cache: Path) -> list:
    """(manifest record, local file) of every training video of `split`, staged into `cache`
    from the shards as the NVDEC loader stages them (loader.videocache: sha256-checked)."""
    from loader import LoaderConfig
    from loader.source import load_dataset
    from loader.videocache import stage_cache

    cfg = LoaderConfig(manifests=manifests, shards=shards, split=split, subset="train",
                       mode="train", batch_size=1)  # fmt: skip
    dataset = load_dataset(cfg)
    return list(zip(dataset.records, stage_cache(dataset, cache), strict=True))


def remux(manifests: Path, shards: Path, out: Path, split: int = 1) -> list[dict]:
    """Every training video of `split`, its VP9 stream copied unchanged into `out`/<key>.mp4 (the
    shard's copy checked against the manifest's sha256 first); the listing written beside them."""
    import tempfile

    from prep.ffmpeg import ffmpeg_exe

    out.mkdir(parents=True, exist_ok=True)
    listing = []
    with tempfile.TemporaryDirectory(prefix="ucf3d-remux-") as tmp:
        for rec, src in training_videos(manifests, shards, split, Path(tmp)):
            dst = out / f"{rec.key}.mp4"
            cmd = [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-i", str(src),
                   "-map", "0:v:0", "-c", "copy", str(dst)]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"{src}: ffmpeg could not copy it into MP4: "
                                   f"{done.stderr.strip()[-300:]}")  # fmt: skip
            listing.append({"file": dst.name, "key": rec.key, "n_frames": rec.n_frames})
    (out / LISTING).write_text("".join(json.dumps(r) + "\n" for r in listing))
    return listing


def clip_plan(listing: list[dict], clips: int, seed: int, clip_len: int = CLIP_LEN) -> list:
    """`clips` (file, first frame) pairs: a random video, a random start where the whole window
    fits (Hara's random crop in time); videos shorter than a clip are left out."""
    usable = [r for r in listing if r["n_frames"] >= clip_len]
    if not usable:
        raise ValueError(f"no video of {len(listing)} has {clip_len} frames")
    rng = random.Random(seed)
    plan = []
    for _ in range(clips):
        r = rng.choice(usable)
        plan.append((r["file"], rng.randrange(r["n_frames"] - clip_len + 1)))
    return plan


class Pacer:
    """Hands out clip numbers no faster than `rate` a second (None: as fast as asked), from the
    moment it is made, to any number of threads, until `stop`."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._issued = 0
        self._t0 = time.perf_counter()

    def take(self) -> int | None:
        with self._lock:
            n = self._issued
            self._issued += 1
        if self.rate is not None:
            wait = self._t0 + n / self.rate - time.perf_counter()
            if wait > 0 and self.stop.wait(wait):
                return None
        return None if self.stop.is_set() else n


class ClipThreads:
    """`threads` threads decoding the plan's clips in turn, at most `rate` a second between them
    (Pacer); each thread calls `reader(index)` once for its own `decode(name, start)` (which
    decodes one clip and returns when its GPU work is done) and `close()`. The first error stops
    them all and is reported in the summary, not raised: the phase goes on and says so."""

    def __init__(self, plan: list, threads: int, rate: float | None,
                 reader: Callable[[int], tuple[Callable[[str, int], None], Callable[[], None]]]
                 ) -> None:  # fmt: skip
        self.plan, self.reader = plan, reader
        self.pacer = Pacer(rate)
        self.done = [0] * threads
        self.errors: list[str] = []
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True,
                                          name=f"reader-{i}") for i in range(threads)]  # fmt: skip

    def __enter__(self) -> ClipThreads:
        self._t0, self._cpu0 = time.perf_counter(), time.process_time()
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.pacer.stop.set()
        for t in self._threads:
            t.join(timeout=30)
        self.seconds = time.perf_counter() - self._t0
        self.cpu_s = time.process_time() - self._cpu0

    def _run(self, index: int) -> None:
        close = None
        try:
            decode, close = self.reader(index)
            while (n := self.pacer.take()) is not None:
                decode(*self.plan[n % len(self.plan)])
                self.done[index] += 1
        except Exception as e:  # noqa: BLE001 - reported in the line, the phase goes on
            self.errors.append(f"{type(e).__name__}: {e}"[:300])
            self.pacer.stop.set()
        finally:
            if close is not None:
                close()

    def summary(self) -> dict:
        clips = sum(self.done)
        return {"decoded_clips": clips, "decoded_per_s": round(clips / self.seconds, 1),
                "host_cores": round(self.cpu_s / self.seconds, 2),
                **({"errors": self.errors[:3]} if self.errors else {})}  # fmt: skip


def pynvc_reader(torch: Any, nvc: Any, folder: Path, color: str) -> Callable:
    """ClipThreads' reader for PyNvVideoCodec: a SimpleDecoder of the thread's own (reconfigured
    for each new file, as its decoder cache is meant to be used) on a CUDA stream of its own; each
    clip's frames copied into one tensor by one kernel on that stream."""
    color_type = {"native": nvc.OutputColorType.NATIVE, "rgb": nvc.OutputColorType.RGB}[color]

    def reader(index: int) -> tuple[Callable[[str, int], None], Callable[[], None]]:
        stream = torch.cuda.Stream()
        state: dict[str, Any] = {"decoder": None, "path": None}

        def decode(name: str, start: int) -> None:
            path = str(folder / name)
            if state["decoder"] is None:
                state["decoder"] = nvc.SimpleDecoder(path, cuda_stream=stream.cuda_stream,
                                                     use_device_memory=True,
                                                     output_color_type=color_type)  # fmt: skip
            elif path != state["path"]:
                state["decoder"].reconfigure_decoder(path)
            state["path"] = path
            frames = state["decoder"].get_batch_frames_by_index(
                list(range(start, start + CLIP_LEN)))  # fmt: skip
            if len(frames) != CLIP_LEN:
                raise RuntimeError(f"{path}: {len(frames)} frames from {start}, not {CLIP_LEN}")
            with torch.cuda.stream(stream):
                torch.stack([_tensor(torch, f) for f in frames])
            stream.synchronize()  # the decoder's surfaces are free again for its next clip

        return decode, lambda: None

    return reader


def _tensor(torch: Any, frame: Any) -> Any:
    """A decoded frame as a tensor on the GPU, without a copy: DLPack, else the CUDA array
    interface (both offered by PyNvVideoCodec's frames)."""
    try:
        return torch.from_dlpack(frame)
    except (TypeError, RuntimeError, BufferError):
        return torch.as_tensor(frame, device="cuda")


def check_counts(nvc: Any, folder: Path, listing: list[dict], sample: int = 8) -> list[str]:
    """The container's frame count against the manifest's, for the first `sample` videos."""
    wrong = []
    for r in listing[:sample]:
        meta = nvc.SimpleDecoder(str(folder / r["file"])).get_stream_metadata()
        if meta.num_frames != r["n_frames"]:
            wrong.append(f"{r['file']}: {meta.num_frames} frames, manifest {r['n_frames']}")
    return wrong


def run_phases(args: argparse.Namespace, stand: tuple, head: dict, plan: list,
               kinds: tuple[str, ...], readers: Callable[[str], Callable]) -> None:  # fmt: skip
    """One line per phase of `args.phases` (the module docstring's): `decode`/`decode-1` with
    readers(args.color), `none`, or one of `kinds` beside the step with readers(kind); `stand`:
    spill_probe.stand_in's (torch, consumer, partition, streams)."""
    torch, consumer, part, streams = stand
    from bench.feed_torch import _profile
    from bench.measure import GilProbe

    for phase in [p.strip() for p in args.phases.split(",")]:
        whole = phase.startswith("whole-")
        kind = phase.removeprefix("whole-")
        line: dict[str, Any] = {**head, "phase": phase,
                                "step_sms": 0 if whole else part.sms,
                                "device_sms": part.device_sms}  # fmt: skip
        with GilProbe() as gil:
            t0 = time.perf_counter()
            if kind in ("decode", "decode-1"):
                threads = 1 if kind == "decode-1" else args.threads
                with ClipThreads(plan, threads, None, readers(args.color)) as dec:
                    time.sleep(args.seconds)
                line.update(threads=threads, color=args.color, **dec.summary())
            else:
                if kind not in ("none", *kinds):
                    raise SystemExit(f"unknown phase {phase!r}")
                with torch.cuda.stream(streams["whole" if whole else "part"]):
                    warm_up(torch, consumer, args.warmup)
                    if kind == "none":
                        line.update(timed_steps(consumer, args.steps))
                    else:
                        with ClipThreads(plan, args.threads, args.rate, readers(kind)) as dec:
                            time.sleep(1.0)  # the readers at their pace first
                            line.update(timed_steps(consumer, args.steps))
                            if phase == args.profile_phase:
                                line["kernels"] = _profile(
                                    lambda: timed_steps(consumer, args.profile_steps),
                                    args.profile_steps, args.profile_trace)  # fmt: skip
                        line.update(color=kind, **dec.summary())
            line["lock"] = gil.summary(t0, time.perf_counter(), listed=5)
        print(json.dumps(line), flush=True)


def run_arguments(ap: argparse.ArgumentParser, phases: str, colors: tuple[str, ...]) -> None:
    """The options of a probe's `run` (this one's, and bench.own_reader's)."""
    ap.add_argument("--threads", type=int, default=14)
    ap.add_argument("--rate", type=float, default=2300.0,
                    help="clips a second asked of the readers beside the step")
    ap.add_argument("--color", choices=colors, default=colors[0], help="for the decode phases")
    ap.add_argument("--phases", default=phases)
    ap.add_argument("--seconds", type=float, default=8.0, help="each decode phase")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--loader-sms", type=int, default=2)
    ap.add_argument("--graph", action="store_true", help="the CUDA-graphed step")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--profile-phase", default="", help="profile this phase's extra steps")
    ap.add_argument("--profile-steps", type=int, default=6)
    ap.add_argument("--profile-trace", type=Path, default=None, help="keep its trace (.json.gz)")


def run(args: argparse.Namespace) -> None:
    *stand, head = stand_in(args.graph, args.loader_sms)
    torch = stand[0]
    import PyNvVideoCodec as nvc

    folder = Path(args.videos)
    listing = [json.loads(line) for line in (folder / LISTING).read_text().splitlines()]
    head = {**head, "bench": "nvc", "pynvvideocodec": getattr(nvc, "__version__", "?"),
            "videos": len(listing), "threads": args.threads, "rate_asked": args.rate,
            "count_mismatches": check_counts(nvc, folder, listing)}  # fmt: skip
    run_phases(args, tuple(stand), head, clip_plan(listing, 1_000_000, args.seed), COLORS,
               lambda color: pynvc_reader(torch, nvc, folder, color))  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    rm = sub.add_parser("remux", help="MP4 copies of a split's training videos (no GPU)")
    rm.add_argument("--manifests", type=Path, required=True)
    rm.add_argument("--shards", type=Path, required=True)
    rm.add_argument("--split", type=int, default=1)
    rm.add_argument("--out", type=Path, required=True)
    rn = sub.add_parser("run", help="the phases (GPU, PyTorch, PyNvVideoCodec)")
    rn.add_argument("--videos", type=Path, required=True, help="a folder remux wrote")
    run_arguments(rn, "decode-1,decode,none,native,rgb,whole-none,whole-native", COLORS)
    args = ap.parse_args(argv)
    if args.cmd == "remux":
        listing = remux(args.manifests, args.shards, args.out, args.split)
        print(json.dumps({"remuxed": len(listing), "out": str(args.out)}))
    else:
        run(args)


if __name__ == "__main__":
    main()
