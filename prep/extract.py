"""extract: each video of the official split lists -> a short-GOP VP9/H.264 video + exact record.

WORK/videos/<Class>/<key>.<ext> is written as `<key>.<ext>.tmp` and renamed only after its frames
were counted; the record `<key>.json` beside it, written last, marks the video finished. A re-run
skips a video whose record, size and sha256 still match (and re-encodes it otherwise), so a run
that was interrupted (Ctrl-C, kill) resumes where it stopped. WORK/index.jsonl and WORK/errors.jsonl
are rewritten, sorted by key, at the end of every completed run.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path

import ondisk
from ondisk import CLIP_LEN, VIDEO_EXT, VideoRecord
from prep.ffmpeg import DecodeError, run_ffmpeg
from prep.files import sha256_file, write_text_atomic
from prep.ucf import VideoEntry, read_splits

log = logging.getLogger(__name__)

WORK_SUMMARY = "extract_summary.json"
DEFAULT_CRF = {"vp9": 40, "h264": 23}  # both above the JPEG route's quality (BENCHMARKS.md)


@dataclass(frozen=True)
class ExtractConfig:
    videos: Path  # the unpacked UCF-101/ directory (<Class>/<video>.avi)
    splits: Path  # ucfTrainTestlist/
    out: Path  # WORK
    codec: str = "vp9"  # "vp9" (DALI decodes it on CPU and GPU) or "h264"
    short_side: int = 128
    fps: int = 25
    gop: int = 16
    crf: int | None = None  # None: DEFAULT_CRF[codec]
    jobs: int = 0  # 0: all cores
    strict: bool = False
    ffmpeg: str | None = None

    def encoding(self) -> dict:
        """The settings that determine the output bytes (a change re-encodes everything)."""
        return {
            "codec": self.codec,
            "short_side": self.short_side,
            "fps": self.fps,
            "gop": self.gop,
            "crf": self.crf or DEFAULT_CRF[self.codec],
        }


@dataclass(frozen=True)
class ExtractResult:
    prepared: int  # videos in index.jsonl
    encoded: int  # of which encoded by this run
    skipped: int  # of which found finished and checked
    errors: int  # videos in errors.jsonl
    out: Path


def encode_args(cfg: ExtractConfig, src: Path, dst: Path) -> list[str]:
    """ffmpeg arguments: constant fps, short side scaled (even other side), yuv420p, no audio."""
    s, g = cfg.short_side, str(cfg.gop)
    vf = f"fps={cfg.fps},scale=w='if(gte(iw,ih),-2,{s})':h='if(gte(iw,ih),{s},-2)':flags=bicubic"
    args = [
        "-i",
        os.fspath(src),
        "-map",
        "0:v:0",
        "-an",
        "-sn",
        "-dn",
        "-vf",
        vf,
        "-pix_fmt",
        "yuv420p",
        "-threads",
        "1",
        "-map_metadata",
        "-1",
        "-fflags",
        "+bitexact",
        "-flags:v",
        "+bitexact",
    ]
    crf = str(cfg.crf or DEFAULT_CRF[cfg.codec])
    if cfg.codec == "vp9":
        # realtime/cpu-used 8 is ~4x faster than good/5 at the same PSNR here (docs/BENCHMARKS.md);
        # no alt-ref frames and no lag: every packet is one shown frame, decode order = display
        args += [
            "-c:v",
            "libvpx-vp9",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-crf",
            crf,
            "-b:v",
            "0",
            "-g",
            g,
            "-keyint_min",
            g,
            "-auto-alt-ref",
            "0",
            "-lag-in-frames",
            "0",
            "-row-mt",
            "0",
            "-f",
            "webm",
        ]
    elif cfg.codec == "h264":
        args += [
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            crf,
            "-bf",
            "0",
            "-x264-params",
            f"keyint={g}:min-keyint={g}:scenecut=0:open-gop=0",
            "-movflags",
            "+faststart",
            "-f",
            "mp4",
        ]
    else:
        raise ValueError(f"unknown codec {cfg.codec!r}; choose from {', '.join(VIDEO_EXT)}")
    return [*args, "-y", os.fspath(dst)]


def decode_output(path: Path) -> tuple[int, int, int]:
    """(frames, width, height) of a training-format video, by decoding every frame.

    In-process (PyAV) rather than a second ffmpeg run: same exactness, a third of the CPU time.
    Raises DecodeError if the output does not decode cleanly.
    """
    import av

    try:
        with av.open(os.fspath(path), format=_container(path)) as c:
            stream = c.streams.video[0]
            stream.thread_type = "NONE"  # one core per job; --jobs supplies the parallelism
            n = width = height = 0
            for frame in c.decode(stream):
                n, width, height = n + 1, frame.width, frame.height
    except (av.FFmpegError, IndexError) as e:
        raise DecodeError(path, f"output does not decode: {e}") from e
    return n, width, height


def _container(path: Path) -> str | None:
    name = path.name.removesuffix(".tmp")
    return {"webm": "matroska", "mp4": "mp4"}.get(name.rsplit(".", 1)[-1])


def _probe_source(src: Path, fps: int) -> tuple[int | None, str | None]:
    """(frames the header promises at `fps`, or None; a truncation reason, or None).

    Demuxes without decoding: a file holding fewer packets than its header promises was cut
    short (a copy or download that stopped), even when every packet it holds decodes cleanly.
    """
    import av

    try:
        with av.open(os.fspath(src)) as c:
            s = c.streams.video[0]
            declared, rate = s.frames, s.average_rate
            packets = sum(1 for p in c.demux(s) if p.dts is not None or p.size)
    except (av.FFmpegError, IndexError, ValueError):
        return None, None  # ffmpeg itself will say what is wrong
    if not declared or not rate:
        return None, None
    if packets < declared:
        return None, f"truncated: header declares {declared} frames, the file holds {packets}"
    return round(declared * fps / float(rate)), None


@dataclass(frozen=True)
class _Task:
    entry: VideoEntry
    src: Path
    dst: Path
    cfg: ExtractConfig


def _finished(task: _Task) -> VideoRecord | None:
    """The record of a finished output that still checks out, else None."""
    meta = task.dst.with_suffix(".json")
    try:
        obj = json.loads(meta.read_text(encoding="utf-8"))
        rec = VideoRecord.from_obj(obj["record"], str(meta))
        ok = (
            obj.get("encoding") == task.cfg.encoding()
            and rec.src_bytes == task.src.stat().st_size
            and rec.bytes == task.dst.stat().st_size
            and rec.sha256 == sha256_file(task.dst)
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not ok:
        log.info("%s: finished output does not match, re-encoding", task.entry.key)
        return None
    return rec


def _prepare(task: _Task) -> tuple[str, VideoRecord | str, bool]:
    """(key, record or error reason, skipped). Runs in a worker process."""
    e, src, dst, cfg = task.entry, task.src, task.dst, task.cfg
    if not src.is_file():
        return e.key, f"missing: {src} does not exist", False
    if src.stat().st_size == 0:
        return e.key, "zero bytes", False
    rec = _finished(task)
    if rec is not None:
        return e.key, rec, True
    dst.parent.mkdir(parents=True, exist_ok=True)
    for stale in dst.parent.glob(f"{e.key}.*tmp"):  # left by a killed run (keys hold no dots)
        stale.unlink(missing_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    declared, truncated = _probe_source(src, cfg.fps)
    if truncated:
        return e.key, truncated, False
    try:
        run_ffmpeg(encode_args(cfg, src, tmp), src, ffmpeg=cfg.ffmpeg)
        n, width, height = decode_output(tmp)
        if declared is not None and n + 2 < declared:
            raise DecodeError(src, f"truncated: header declares ~{declared} frames, decoded {n}")
        if n < CLIP_LEN:
            raise DecodeError(src, f"too short: {n} frames < one {CLIP_LEN}-frame clip")
    except DecodeError as err:
        tmp.unlink(missing_ok=True)
        return e.key, _reason(err), False
    rec = VideoRecord(
        key=e.key,
        cls=e.cls,
        label=e.label,
        n_frames=n,
        width=width,
        height=height,
        fps=cfg.fps,
        codec=cfg.codec,
        gop=cfg.gop,
        bytes=tmp.stat().st_size,
        sha256=sha256_file(tmp),
        src_bytes=src.stat().st_size,
        src_sha256=sha256_file(src),
        path=dst.relative_to(cfg.out).as_posix(),
        train_in=e.train_in,
        test_in=e.test_in,
    )
    tmp.replace(dst)
    meta = dst.with_suffix(".json")
    write_text_atomic(
        meta,
        json.dumps({"encoding": cfg.encoding(), "record": rec.to_obj()}, sort_keys=True) + "\n",
    )
    return e.key, rec, False


def _reason(err: DecodeError) -> str:
    tail = [ln for ln in err.stderr_tail.splitlines() if ln.strip()]
    if tail and tail[-1].startswith(("truncated:", "too short:")):
        return tail[-1]
    return "undecodable: " + (" | ".join(tail[-3:]) if tail else "ffmpeg failed")


def _ignore_sigint() -> None:
    # Ctrl-C goes to the parent, which stops handing out work; running encodes finish whole.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def extract(cfg: ExtractConfig, progress: Callable[..., None] | None = None) -> ExtractResult:
    """Prepare every listed video under cfg.out; see the module docstring for the files."""
    classes, entries = read_splits(cfg.splits)
    if cfg.codec not in VIDEO_EXT:
        raise ValueError(f"unknown codec {cfg.codec!r}; choose from {', '.join(VIDEO_EXT)}")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(
        out / ondisk.WORK_CONFIG,
        json.dumps(
            {
                **{
                    k: str(Path(v).resolve()) if isinstance(v, Path) else v
                    for k, v in asdict(cfg).items()
                },
                "encoding": cfg.encoding(),
                "classes": classes,
            },
            indent=1,
            sort_keys=True,
        )
        + "\n",
    )
    ext = VIDEO_EXT[cfg.codec]
    tasks = [
        _Task(
            e,
            Path(cfg.videos) / e.relpath,
            out / ondisk.WORK_VIDEOS / e.cls / f"{e.key}.{ext}",
            cfg,
        )
        for e in entries
    ]
    records: dict[str, VideoRecord] = {}
    errors: dict[str, str] = {}
    skipped = 0
    if progress:
        progress(0, total=len(tasks))
    for key, res, was_skipped in _run(tasks, cfg.jobs or os.cpu_count() or 1):
        if isinstance(res, VideoRecord):
            records[key] = res
            skipped += was_skipped
        else:
            errors[key] = res
            log.warning("%s: %s", key, res)
        if progress:
            progress(1)
    by_key = {t.entry.key: t for t in tasks}
    write_text_atomic(
        out / ondisk.WORK_INDEX, "".join(records[k].to_json() + "\n" for k in sorted(records))
    )
    write_text_atomic(
        out / ondisk.WORK_ERRORS,
        "".join(
            json.dumps(
                {
                    "key": k,
                    "class": by_key[k].entry.cls,
                    "path": str(by_key[k].src),
                    "reason": errors[k],
                },
                sort_keys=True,
            )
            + "\n"
            for k in sorted(errors)
        ),
    )
    summary = {
        "listed": len(tasks),
        "prepared": len(records),
        "encoded": len(records) - skipped,
        "skipped": skipped,
        "errors": len(errors),
        "classes": len(classes),
        "frames": sum(r.n_frames for r in records.values()),
        "bytes": sum(r.bytes for r in records.values()),
        "src_bytes": sum(r.src_bytes for r in records.values()),
        "error_list": [{"key": k, "reason": errors[k]} for k in sorted(errors)],
    }
    write_text_atomic(out / WORK_SUMMARY, json.dumps(summary, indent=1, sort_keys=True) + "\n")
    log.info(
        "extract: %d prepared (%d encoded, %d already done), %d errors -> %s",
        len(records),
        len(records) - skipped,
        skipped,
        len(errors),
        out,
    )
    result = ExtractResult(len(records), len(records) - skipped, skipped, len(errors), out)
    if not records:
        raise RuntimeError(
            f"{out}: no video could be prepared ({len(errors)} errors, "
            f"see {out / ondisk.WORK_ERRORS})"
        )
    if cfg.strict and errors:
        first = sorted(errors)[0]
        raise RuntimeError(
            f"{len(errors)} video(s) could not be prepared (--strict), e.g. "
            f"{first}: {errors[first]}; see {out / ondisk.WORK_ERRORS}"
        )
    return result


def _run(tasks: list[_Task], jobs: int):
    """Yield _prepare results; inline for one job, else over a process pool (Ctrl-C safe)."""
    if jobs <= 1:
        for t in tasks:
            yield _prepare(t)
        return
    pool = ProcessPoolExecutor(jobs, initializer=_ignore_sigint)
    pending: set = set()
    todo = iter(tasks)
    try:
        for t in todo:  # keep the queue short so Ctrl-C stops quickly
            pending.add(pool.submit(_prepare, t))
            if len(pending) >= 2 * jobs:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (f.result() for f in done)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield from (f.result() for f in done)
    except BaseException:
        log.warning("interrupted: letting running encodes finish; re-run to resume")
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
