"""A reader of our own on NVDEC: what would it cost the training step? (a GPU probe)

    python -m bench.own_reader build                               # compile it (no GPU needed)
    python -m bench.own_reader run --manifests M --shards S [--threads 14] [--rate 2300] ...

DALI's reader launches two kernels a window frame beside the step (the driver's map out of
NVDEC's layout, and its colour conversion); mapping is the floor, one kernel a frame. By estimate
a reader that launched only the maps would feed the eager step at ~0.97 with the partition and
near 0.99 without (docs/BENCHMARKS.md, "Nineteenth round"), if it kept pace with NVDEC. This
probe is that floor, built: `own_reader.c`, native code driven from Python threads through
ctypes (which lets go of Python's lock for each call), decodes a clip's packets (the WebM
demuxed here, once per video, from the last keyframe at or before the window), maps the 16
window frames (the driver's kernel each), holds them mapped until the clip's GPU work is done,
and unmaps them (`maps`: nothing else on the GPU). A reader for training would convert, crop and
resize the 16 mapped frames into the batch in one kernel before unmapping: `convert` launches one
of that size there (own_reader_convert.cu: nearest sampling of the whole frame, BT.601 colour,
fp16 RGB; a stand-in of the right cost, its output not checked), 17 launches a clip in all.
`last` decodes the same packets but maps only the window's last frame (one kernel a clip): what
NVDEC's decoding costs the step, the maps mostly set apart.

`run` takes the training videos of a split from the shards (through the verified video cache, as
the NVDEC loader does) and runs the phases of bench.nvc_probe (`decode-1`, `decode`, `none`,
`maps`, `convert`, `whole-` for the step on every SM), one JSON line each: clips decoded a second
alone and beside the step, the step's device ms, the host cores, the lock probe's stalls.

`build` compiles `own_reader.c` with `cc` against NVDEC's headers as the DALI package ships them
(nvidia/dali/include/.../dynlink_nvcuvid) and `own_reader_inc/cuda.h` (the few CUDA types they
name; the driver's libraries are opened at run time, so no CUDA toolkit is needed), into
~/.cache/ucf3d/own_reader/ (UCF3D_CACHE's parent if set), named by the source's hash. Built on
one machine, the library runs on another of the same architecture (it needs only the C library):
UCF3D_OWN_READER names such a library, and then nothing is compiled.

Measured on an H200 (docs/BENCHMARKS.md, "Twentieth round"): it keeps pace on the partition but
costs the eager step what DALI's whole loader does (+1.05-1.15 ms against +1.00), half of it
NVDEC's decoding (`last`: +0.56), and falls behind without the partition. At `--priority -5`
("Twenty-first round") it keeps pace without the partition, but the eager step pays +2.06 ms
there, what the partition and the reader on it cost together; so no loader is built on it.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loader.webm import BLOCKGROUP, CLUSTER, EBML, SEGMENT, SIMPLEBLOCK, _element, _vint

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "own_reader.c"
CONVERT_CU, CONVERT_PTX = HERE / "own_reader_convert.cu", HERE / "own_reader_convert.ptx"
OUT_SIZE = 112  # the conversion's output frames: out_size x out_size
KINDS = ("maps", "convert", "last")  # what a clip costs the GPU: its maps alone, with the
# conversion, or the decoding with only the last frame mapped
CLIP_LEN = 16
BLOCK, REFERENCEBLOCK = 0xA1, 0xFB  # inside a BlockGroup
MAX_OUT = 32  # own_reader.c's NVR_MAX_OUT


@dataclass(frozen=True)
class Packets:
    """A WebM's video packets (one a frame, in order): where each one's bytes are, and which are
    keyframes."""

    offsets: np.ndarray  # int64 (F,)
    sizes: np.ndarray  # int32 (F,)
    key: np.ndarray  # bool (F,)

    def window(self, start: int, length: int = CLIP_LEN) -> tuple[int, int]:
        """(first packet, packets to feed) for frames start .. start + length - 1: from the last
        keyframe at or before `start`."""
        if not 0 <= start <= len(self.key) - length:
            raise ValueError(f"frames {start}..{start + length - 1} of {len(self.key)}")
        keys = np.flatnonzero(self.key[: start + 1])
        if not len(keys):
            raise ValueError(f"no keyframe at or before frame {start}")
        first = int(keys[-1])
        return first, start + length - first


def packets(data: bytes) -> Packets:
    """The video packets of a one-track WebM (SimpleBlocks, or Blocks in BlockGroups, unlaced),
    as written by prep's extract; ValueError for anything else."""
    eid, _, end, _ = _element(data, 0)
    if eid != EBML:
        raise ValueError("not a WebM (no EBML header)")
    eid, seg_start, seg_end, _ = _element(data, end)
    if eid != SEGMENT:
        raise ValueError("no Segment after the EBML header")
    offsets, sizes, keys = [], [], []
    i = seg_start
    while i < min(seg_end, len(data)):
        eid, start, stop, _ = _element(data, i)
        if eid == CLUSTER:
            j = start
            while j < stop:
                bid, bs, be, _ = _element(data, j)
                if bid == SIMPLEBLOCK:
                    offset, flags = _block(data, bs)
                    keys.append(bool(flags & 0x80))
                    offsets.append(offset)
                    sizes.append(be - offset)
                elif bid == BLOCKGROUP:  # a keyframe where it names no ReferenceBlock
                    block, referenced, k = None, False, bs
                    while k < be:
                        gid, gs, ge, _ = _element(data, k)
                        if gid == BLOCK:
                            block = (_block(data, gs)[0], ge)
                        referenced |= gid == REFERENCEBLOCK
                        k = ge
                    if block is None:
                        raise ValueError("a BlockGroup without a Block")
                    keys.append(not referenced)
                    offsets.append(block[0])
                    sizes.append(block[1] - block[0])
                j = be
        i = stop
    if not offsets:
        raise ValueError("no video packets")
    return Packets(np.array(offsets, np.int64), np.array(sizes, np.int32), np.array(keys, bool))


def _block(data: bytes, start: int) -> tuple[int, int]:
    """(where the frame's bytes start, the flags byte) of the (Simple)Block at data[start]."""
    track, tlen = _vint(data, start)
    if track != 1:
        raise ValueError(f"a block of track {track}: only one-track videos are read")
    flags = data[start + tlen + 2]  # after the track number and the int16 timecode
    if flags & 0x06:
        raise ValueError("laced blocks are not read")
    return start + tlen + 3, flags


def headers_dir() -> Path:
    """NVDEC's headers as the DALI package ships them."""
    import nvidia.dali

    found = sorted(Path(nvidia.dali.__file__).parent.glob("include/**/dynlink_nvcuvid/nvcuvid.h"))
    if not found:
        raise FileNotFoundError("this DALI package ships no NVDEC headers (nvcuvid.h)")
    return found[0].parent


def build(cache: Path | None = None, cc: str | None = None) -> Path:
    """The compiled reader (compiled now if this source has not been), its path."""
    source = SOURCE.read_bytes() + (HERE / "own_reader_inc" / "cuda.h").read_bytes()  # its hash
    if cache is None:
        env = os.environ.get("UCF3D_CACHE")
        cache = (Path(env).parent if env else Path.home() / ".cache" / "ucf3d") / "own_reader"
    lib = cache / f"libown_reader-{hashlib.sha256(source).hexdigest()[:16]}.so"
    if lib.is_file():
        return lib
    cache.mkdir(parents=True, exist_ok=True)
    tmp = lib.with_name(lib.name + f".{os.getpid()}.tmp")
    cmd = [cc or os.environ.get("CC", "cc"), "-O2", "-Wall", "-std=gnu11", "-shared", "-fPIC",
           "-I", str(HERE / "own_reader_inc"), "-I", str(headers_dir()), str(SOURCE),
           "-o", str(tmp), "-ldl", "-lpthread"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{SOURCE}: cc failed: {done.stderr.strip()[-500:]}")
    tmp.replace(lib)
    return lib


def library_path() -> Path:
    """$UCF3D_OWN_READER (a library `build` made, say on another machine), else `build()`'s."""
    env = os.environ.get("UCF3D_OWN_READER")
    if env:
        if not Path(env).is_file():
            raise FileNotFoundError(f"{env}: no such library (UCF3D_OWN_READER)")
        return Path(env)
    return build()


class ReaderError(RuntimeError):
    """The reader could not be opened, or a clip could not be decoded."""


class Reader:
    """One NVDEC reader (own_reader.c's `nvr`): one per thread."""

    _lib: ctypes.CDLL | None = None

    @classmethod
    def library(cls, path: Path | None = None) -> ctypes.CDLL:
        if cls._lib is None:
            lib = ctypes.CDLL(str(path or library_path()))  # each call lets go of Python's lock
            p, i, ll = ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_longlong)
            lib.nvr_open.restype, lib.nvr_open.argtypes = p, [i, ctypes.c_char_p, i, i, i]
            lib.nvr_load_error.restype, lib.nvr_load_error.argtypes = ctypes.c_char_p, []
            lib.nvr_error.restype, lib.nvr_error.argtypes = ctypes.c_char_p, [p]
            lib.nvr_clip.restype = i
            lib.nvr_clip.argtypes = [p, ctypes.c_char_p, ll, ctypes.POINTER(ctypes.c_int), i, i,
                                     i, i, ctypes.POINTER(ctypes.c_ulonglong),
                                     ctypes.POINTER(ctypes.c_uint)]  # fmt: skip
            lib.nvr_release.restype, lib.nvr_release.argtypes = i, [p]
            lib.nvr_close.restype, lib.nvr_close.argtypes = None, [p]
            cls._lib = lib
        return cls._lib

    def __init__(self, device: int = 0, convert: bool = False, priority: int = 0) -> None:
        """`convert`: each clip's mapped frames also read by own_reader_convert.cu's kernel;
        `priority`: its stream's (CUDA's: lower is sooner, 0 the default, clamped to the device's
        range), where the driver maps the frames."""
        self.lib = self.library()
        ptx = CONVERT_PTX.read_bytes() + b"\0" if convert else None
        self.handle = self.lib.nvr_open(device, ptx, OUT_SIZE, OUT_SIZE, priority)
        if not self.handle:
            raise ReaderError(self.lib.nvr_load_error().decode(errors="replace"))
        self.ptr = (ctypes.c_ulonglong * MAX_OUT)()
        self.pitch = (ctypes.c_uint * MAX_OUT)()

    def clip(self, name: str, data: bytes, pk: Packets, start: int, length: int = CLIP_LEN,
             mapped: int | None = None) -> tuple[list[int], list[int]]:  # fmt: skip
        """Map frames start .. start + length - 1 of the video (`data`, its packets `pk`): their
        NV12 surfaces' device pointers and pitches, valid until release() or the next clip.
        `mapped`: map only the window's last `mapped` frames (all of them decoded just the same)."""
        first, n = pk.window(start, length)
        keep = length if mapped is None else mapped
        if not 1 <= keep <= length:
            raise ValueError(f"{keep} of {length} frames to map")
        offsets = np.ascontiguousarray(pk.offsets[first : first + n])
        sizes = np.ascontiguousarray(pk.sizes[first : first + n])
        got = self.lib.nvr_clip(
            self.handle, data, offsets.ctypes.data_as(ctypes.POINTER(ctypes.c_longlong)),
            sizes.ctypes.data_as(ctypes.POINTER(ctypes.c_int)), n, first, start + length - keep,
            keep, self.ptr, self.pitch)  # fmt: skip
        if got != keep:
            raise ReaderError(f"{name}: {self.lib.nvr_error(self.handle).decode(errors='replace')}")
        return list(self.ptr[:keep]), list(self.pitch[:keep])

    def release(self) -> None:
        """Unmap the last clip's frames once the GPU work queued on them is done."""
        if self.lib.nvr_release(self.handle) != 0:
            raise ReaderError(self.lib.nvr_error(self.handle).decode(errors="replace"))

    def close(self) -> None:
        if self.handle:
            self.lib.nvr_close(self.handle)
            self.handle = None


def own_reader(videos: dict[str, tuple[bytes, Packets]], priority: int = 0) -> Callable:
    """bench.nvc_probe's readers: for `kind` (one of KINDS), ClipThreads' reader, a Reader of the
    thread's own (its stream at `priority`) mapping each clip's window (or its last frame;
    converting it) and releasing it."""

    def readers(kind: str) -> Callable:
        def reader(index: int) -> tuple[Callable[[str, int], None], Callable[[], None]]:
            r = Reader(convert=kind == "convert", priority=priority)

            def decode(name: str, start: int) -> None:
                data, pk = videos[name]
                r.clip(name, data, pk, start, mapped=1 if kind == "last" else None)
                r.release()

            return decode, r.close

        return reader

    return readers


def load_videos(manifests: Path, shards: Path, split: int) -> dict[str, tuple[bytes, Packets]]:
    """Every training video of the split, its bytes (from the verified video cache) and packets,
    by key; a video that is not a WebM this reader can read is named in the error."""
    from bench.nvc_probe import training_videos
    from loader.videocache import default_cache_dir

    out = {}
    for rec, path in training_videos(manifests, shards, split, default_cache_dir()):
        data = path.read_bytes()
        try:
            pk = packets(data)
        except (ValueError, IndexError) as e:
            raise ReaderError(f"{path}: {e}") from e
        if len(pk.key) != rec.n_frames:
            raise ReaderError(f"{path}: {len(pk.key)} packets, the manifest says "
                              f"{rec.n_frames} frames")  # fmt: skip
        out[rec.key] = (data, pk)
    return out


def run(args: argparse.Namespace) -> None:
    from bench.nvc_probe import clip_plan, run_phases
    from bench.spill_probe import stand_in

    library_path()  # before the step's set-up: a compiler error says so at once
    videos = load_videos(args.manifests, args.shards, args.split)
    *stand, head = stand_in(args.graph, args.loader_sms)
    listing = [{"file": k, "n_frames": len(pk.key)} for k, (_, pk) in videos.items()]
    head = {**head, "bench": "own_reader", "videos": len(videos), "threads": args.threads,
            "rate_asked": args.rate, "priority": args.priority}  # fmt: skip
    run_phases(args, tuple(stand), head, clip_plan(listing, 1_000_000, args.seed), KINDS,
               own_reader(videos, args.priority))


def main(argv: list[str] | None = None) -> None:
    from bench.nvc_probe import run_arguments

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", help="compile the reader (no GPU needed)")
    sub.add_parser("ptx", help="rebuild own_reader_convert.ptx from its .cu (needs nvcc)")
    rn = sub.add_parser("run", help="the phases (GPU, PyTorch)")
    rn.add_argument("--manifests", type=Path, required=True)
    rn.add_argument("--shards", type=Path, required=True)
    rn.add_argument("--split", type=int, default=1)
    rn.add_argument("--priority", type=int, default=0,
                    help="the readers' CUDA stream priority (lower is sooner: -5 is an H200's "
                         "highest; the step's streams are at 0)")
    run_arguments(rn, "decode-1,decode,none,maps,convert,whole-none,whole-maps,whole-convert",
                  KINDS)  # fmt: skip
    args = ap.parse_args(argv)
    if args.cmd == "build":
        print(json.dumps({"built": str(build())}))
    elif args.cmd == "ptx":
        from loader.handover import build_ptx

        CONVERT_PTX.write_text(build_ptx(os.environ.get("NVCC", "nvcc"), CONVERT_CU))
        print(json.dumps({"wrote": str(CONVERT_PTX)}))
    else:
        run(args)


if __name__ == "__main__":
    main()
