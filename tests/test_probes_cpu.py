"""The GPU probes' parts that need no GPU (their GPU runs: test_probes.py): nvc_probe's MP4 copies
(real ffmpeg, the frame counts kept), Hara's random windows, the pacing of its decoding threads;
spill_probe's timing of its load kernels."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from bench.nvc_probe import LISTING, Pacer, clip_plan, remux
from bench.spill_probe import kernel_us
from loader.source import LoaderError
from prep.ffmpeg import ffmpeg_exe


def _packets(path: Path) -> int:
    """Video packets in a file, as ffmpeg counts them when it copies the stream."""
    cmd = [ffmpeg_exe(), "-nostdin", "-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "null",
           "-"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return int(re.findall(r"frame=\s*(\d+)", out.stderr)[-1])


def test_remux_copies_every_training_video_with_its_frames(prepared, tmp_path: Path) -> None:
    listing = remux(prepared.manifests, prepared.shards, tmp_path / "mp4", prepared.split)
    train = prepared.manifests / f"split{prepared.split}_train.jsonl"
    manifest = [json.loads(line) for line in train.read_text().splitlines()]
    assert [r["key"] for r in listing] == [r["key"] for r in manifest]  # all of them, in order
    written = [json.loads(line) for line in (tmp_path / "mp4" / LISTING).read_text().splitlines()]
    assert written == listing
    for r in listing[:3]:
        path = tmp_path / "mp4" / r["file"]
        assert path.read_bytes()[4:8] == b"ftyp"  # an MP4 container, not the WebM copied
        assert _packets(path) == r["n_frames"] > 0


def test_remux_names_a_broken_video(prepared, tmp_path: Path) -> None:
    """A video whose bytes in its shard no longer match the manifest is refused, naming it, and
    no listing is written."""
    shards = tmp_path / "shards"
    shutil.copytree(prepared.shards, shards)
    rec = json.loads((prepared.manifests / f"split{prepared.split}_train.jsonl")
                     .read_text().splitlines()[1])  # fmt: skip
    with (shards / rec["shard"]).open("r+b") as f:  # one byte in the middle of its video
        f.seek(rec["offset"] + rec["size"] // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(LoaderError, match=rec["key"]):
        remux(prepared.manifests, shards, tmp_path / "mp4", prepared.split)
    assert not (tmp_path / "mp4" / LISTING).exists()


def test_clip_plan_windows_fit_and_repeat() -> None:
    listing = [{"file": "a.mp4", "n_frames": 16}, {"file": "b.mp4", "n_frames": 40},
               {"file": "short.mp4", "n_frames": 15}]  # fmt: skip
    plan = clip_plan(listing, 2000, seed=3)
    assert plan == clip_plan(listing, 2000, seed=3) != clip_plan(listing, 2000, seed=4)
    frames = {r["file"]: r["n_frames"] for r in listing}
    assert {f for f, _ in plan} == {"a.mp4", "b.mp4"}  # a video shorter than a clip never
    assert all(0 <= s <= frames[f] - 16 for f, s in plan)
    assert {s for f, s in plan if f == "a.mp4"} == {0}
    assert {s for f, s in plan if f == "b.mp4"} == set(range(25))  # every start, in 2000 draws
    with pytest.raises(ValueError, match="16 frames"):
        clip_plan(listing[2:], 1, seed=0)


def test_pacer_keeps_the_rate_across_threads_and_stops() -> None:
    pacer = Pacer(500.0)
    taken: list[int] = []

    def take() -> None:
        while (n := pacer.take()) is not None and n < 100:
            taken.append(n)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    took = time.perf_counter() - t0
    assert sorted(taken) == list(range(100))  # every number once, whichever thread took it
    assert took >= 99 / 500 * 0.95  # no faster than asked
    pacer.stop.set()
    assert pacer.take() is None
    unpaced = Pacer(None)
    assert [unpaced.take() for _ in range(3)] == [0, 1, 2]


class _Event:
    """A CUDA event as kernel_us reads one: elapsed_time to a later one, in ms."""

    def __init__(self, ms: float) -> None:
        self.ms = ms

    def elapsed_time(self, other: _Event) -> float:
        return other.ms - self.ms


def test_kernel_us_counts_only_kernels_launched_while_the_steps_ran() -> None:
    # launched at t = 0..99 s, the i-th taking i us; the steps ran from t = 10 to t = 59
    timed = [(float(t), _Event(5.0), _Event(5.0 + t / 1000)) for t in range(100)]
    out = kernel_us(timed, 10.0, 59.0)
    assert out == {"n": 50, "median": 35.0, "p90": 55.0, "p99": 59.0, "max": 59.0}
    assert kernel_us(timed, 200.0, 300.0) == {"n": 0}


def _framecrc(path: Path) -> list[tuple[int, int, bool]]:
    """ffmpeg's own packets of a video: (size, Adler-32 from 0, keyframe) each."""
    cmd = [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-i", str(path), "-map", "0:v:0",
           "-c", "copy", "-f", "framecrc", "-"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        cols = [c.strip() for c in line.split(",")]
        flags = next((int(c[2:], 16) for c in cols[6:] if c.startswith("F=")), 1)
        rows.append((int(cols[4]), int(cols[5], 16), bool(flags & 1)))
    return rows


def test_own_reader_packets_are_ffmpegs(prepared, tmp_path: Path, monkeypatch) -> None:
    """Every training video's packets, as the reader feeds them to NVDEC: the same bytes (size
    and checksum) and keyframes as ffmpeg's demuxer finds, as many as the manifest's frames."""
    import zlib

    from bench.own_reader import load_videos

    monkeypatch.setenv("UCF3D_CACHE", str(tmp_path / "videos"))
    videos = load_videos(prepared.manifests, prepared.shards, prepared.split)
    assert videos
    for key, (data, pk) in videos.items():
        (path,) = (tmp_path / "videos").glob(f"*-{key}.webm")
        ours = [(int(s), zlib.adler32(data[o : o + s], 0), bool(k))
                for o, s, k in zip(pk.offsets, pk.sizes, pk.key, strict=True)]  # fmt: skip
        assert ours == _framecrc(path), key


def test_own_reader_windows_start_at_a_keyframe() -> None:
    import numpy as np

    from bench.own_reader import Packets, packets

    key = np.zeros(40, bool)
    key[[0, 8, 16, 24, 32]] = True
    pk = Packets(np.arange(40, dtype=np.int64), np.ones(40, np.int32), key)
    assert pk.window(0) == (0, 16) and pk.window(8) == (8, 16) and pk.window(13) == (8, 21)
    assert pk.window(24) == (24, 16)
    with pytest.raises(ValueError, match="frames 25..40 of 40"):
        pk.window(25)
    with pytest.raises(ValueError, match="no keyframe"):
        Packets(pk.offsets, pk.sizes, np.zeros(40, bool)).window(3)
    with pytest.raises(ValueError, match="not a WebM"):
        packets(b"RIFF\x00\x00\x00\x00AVI LIST")


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc) here")
def test_own_reader_builds_and_says_why_it_cannot_open(tmp_path: Path, monkeypatch) -> None:
    """The reader compiles against DALI's NVDEC headers, once per source; opened where the
    driver is missing, it says so (an error, not a crash)."""
    import ctypes

    from bench import own_reader

    lib = own_reader.build(cache=tmp_path)
    assert lib.is_file() and lib.parent == tmp_path
    built = lib.stat().st_mtime_ns
    assert own_reader.build(cache=tmp_path) == lib and lib.stat().st_mtime_ns == built
    monkeypatch.setenv("UCF3D_OWN_READER", str(lib))
    assert own_reader.library_path() == lib
    monkeypatch.setattr(own_reader.Reader, "_lib", None)
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        for convert in (False, True):
            with pytest.raises(own_reader.ReaderError, match="no CUDA driver"):
                own_reader.Reader(convert=convert)
    else:
        pytest.skip("a CUDA driver is here: the GPU test opens the reader")
    monkeypatch.setenv("UCF3D_OWN_READER", str(tmp_path / "missing.so"))
    with pytest.raises(FileNotFoundError, match="UCF3D_OWN_READER"):
        own_reader.library_path()


def test_clip_threads_decode_the_plan_stop_on_an_error_and_close() -> None:
    """nvc_probe.ClipThreads (both probes' readers run in it): every thread opens its reader
    once and closes it, the plan's clips are taken at the pace asked, and the first error stops
    them all and is reported."""
    from bench.nvc_probe import ClipThreads

    plan = [(f"v{i}", i) for i in range(10)]

    def make_reader(fail_after: int | None):
        seen: list[tuple[str, int]] = []
        opened: list[int] = []
        closed: list[int] = []

        def reader(index: int):
            opened.append(index)

            def decode(name: str, start: int) -> None:
                if fail_after is not None and len(seen) >= fail_after:
                    raise RuntimeError(f"{name}: broken")
                seen.append((name, start))

            return decode, lambda: closed.append(index)

        return reader, seen, opened, closed

    reader, seen, opened, closed = make_reader(None)
    with ClipThreads(plan, 3, 100.0, reader) as threads:
        time.sleep(0.3)
    out = threads.summary()
    assert sorted(opened) == sorted(closed) == [0, 1, 2] and "errors" not in out
    assert out["decoded_clips"] == len(seen) >= 20  # 100 a second for ~0.3 s
    assert out["decoded_per_s"] <= 100 * 1.1
    assert set(seen) == set(plan)  # the plan's clips, round and round

    reader, seen, opened, closed = make_reader(25)
    with ClipThreads(plan, 3, None, reader) as threads:
        time.sleep(0.3)
    out = threads.summary()
    assert sorted(opened) == sorted(closed) == [0, 1, 2]
    assert out["errors"][0].startswith("RuntimeError: v")
    assert out["decoded_clips"] == len(seen) and 25 <= len(seen) <= 27  # a thread or two in flight


def test_own_reader_conversion_ptx_is_its_source() -> None:
    """Editing own_reader_convert.cu without `python -m bench.own_reader ptx` is caught; rebuilt
    by the nvcc that made it (where there is one), the PTX is byte for byte the committed one."""
    from bench.own_reader import CONVERT_CU, CONVERT_PTX
    from loader.handover import build_ptx, source_digest

    ptx = CONVERT_PTX.read_text()
    assert ptx.splitlines()[0] == f"// own_reader_convert.cu sha256 {source_digest(CONVERT_CU)}", (
        "bench/own_reader_convert.ptx is stale: run `python -m bench.own_reader ptx`"
    )
    assert ".visible .entry nv12_clip(" in ptx and ".target sm_70" in ptx
    nvcc = shutil.which("nvcc")
    made_by = re.search(r"release (\S+), (V\S+)", ptx)
    if nvcc is None or made_by is None:
        return
    if made_by.group(2) in subprocess.run([nvcc, "--version"], capture_output=True,
                                          text=True).stdout:  # fmt: skip
        assert build_ptx(nvcc, CONVERT_CU) == ptx
