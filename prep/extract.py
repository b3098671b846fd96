"""extract: each video of the official split lists -> a short-GOP VP9/H.264 video + exact record.

WORK/videos/<Class>/<key>.<ext> is written as `<key>.<ext>.tmp` and renamed only after its frames
were counted; the record `<key>.json` beside it, written last, marks the video finished. A re-run
skips a video whose record, size and sha256 still match (and re-encodes it otherwise), so a run
that was interrupted (Ctrl-C, kill) resumes where it stopped. WORK/index.jsonl, errors.jsonl and
extract_summary.json are rewritten, sorted by key, at the end of every completed run, and removed
when a run starts, so an interrupted run never leaves a stale index for `shard`. WORK is locked
while a run lasts (`.ucf3d.lock`): a second run on it is refused, naming the first.
WORK/classInd.txt numbers the classes in label order (UCF-101's list, or HMDB-51's sorted names).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import ondisk
from ondisk import CLIP_LEN, VideoRecord
from prep.encode import Encoding, decode_output, probe_source
from prep.ffmpeg import DecodeError, check_ffmpeg, run_ffmpeg
from prep.files import locked_dir, sha256_file, write_text_atomic
from prep.hmdb import read_splits as read_hmdb_splits
from prep.ucf import VideoEntry, read_splits
from prep.workers import WorkerPool

log = logging.getLogger(__name__)

WORK_SUMMARY = "extract_summary.json"
DATASETS = {"ucf101": read_splits, "hmdb51": read_hmdb_splits}  # --dataset -> split reader


@dataclass(frozen=True)
class ExtractConfig:
    videos: Path  # the unpacked UCF-101/ directory (<Class>/<video>.avi)
    splits: Path  # ucfTrainTestlist/
    out: Path  # WORK
    codec: str = "vp9"  # "vp9" (DALI decodes it on CPU and GPU) or "h264"
    short_side: int = 128
    fps: int = 25
    gop: int = 8  # keyframe interval: NVDEC throughput, see docs/BENCHMARKS.md (GPU loader)
    crf: int | None = None  # None: the codec's default (prep.encode.DEFAULT_CRF)
    jobs: int = 0  # 0: all cores
    strict: bool = False
    ffmpeg: str | None = None
    dataset: str = "ucf101"  # "ucf101" (splits: ucfTrainTestlist/) or "hmdb51" (prep.hmdb)

    def encoding(self) -> Encoding:
        return Encoding(self.codec, self.short_side, self.fps, self.gop, self.crf)


@dataclass(frozen=True)
class ExtractResult:
    prepared: int  # videos in index.jsonl
    encoded: int  # of which encoded by this run
    skipped: int  # of which found finished and checked
    errors: int  # videos in errors.jsonl
    out: Path


@dataclass(frozen=True)
class _Task:
    entry: VideoEntry
    src: Path
    dst: Path
    out: Path
    enc: Encoding
    ffmpeg: str | None


def _finished(task: _Task) -> VideoRecord | None:
    """The record of a finished output that still checks out, else None."""
    meta = task.dst.with_suffix(".json")
    try:
        obj = json.loads(meta.read_text(encoding="utf-8"))
        rec = VideoRecord.from_obj(obj["record"], str(meta))
        ok = (
            obj.get("encoding") == asdict(task.enc)
            and rec.src_bytes == task.src.stat().st_size
            and rec.bytes == task.dst.stat().st_size
            and rec.sha256 == sha256_file(task.dst)
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not ok:
        log.info("%s: finished output does not match, re-encoding", task.entry.key)
    return rec if ok else None


def _prepare(task: _Task) -> tuple[str, VideoRecord | str, bool]:
    """(key, record or error reason, skipped). Runs in a worker process."""
    e, src, dst, enc = task.entry, task.src, task.dst, task.enc
    if not src.is_file():
        return e.key, f"missing: {src} does not exist", False
    if src.stat().st_size == 0:
        return e.key, "zero bytes", False
    rec = _finished(task)
    if rec is not None:  # a record written before `source` existed gets it now
        return e.key, replace(rec, source=e.relpath), True
    dst.parent.mkdir(parents=True, exist_ok=True)
    for stale in dst.parent.glob(f"{e.key}.*tmp"):  # left by a killed run (keys hold no dots)
        stale.unlink(missing_ok=True)
    declared, truncated = probe_source(src, enc.fps)
    if truncated:
        return e.key, truncated, False
    tmp = dst.with_name(dst.name + ".tmp")
    try:
        run_ffmpeg(enc.ffmpeg_args(src, tmp), src, ffmpeg=task.ffmpeg)
        n, width, height = decode_output(tmp, enc.codec)
        if declared is not None and n + 2 < declared:
            raise DecodeError(src, f"truncated: header declares ~{declared} frames, decoded {n}")
        if n < CLIP_LEN:
            raise DecodeError(src, f"too short: {n} frames < one {CLIP_LEN}-frame clip")
    except DecodeError as err:
        tmp.unlink(missing_ok=True)
        return e.key, _reason(err), False
    rec = VideoRecord(
        key=e.key, cls=e.cls, label=e.label, n_frames=n, width=width, height=height,
        fps=enc.fps, codec=enc.codec, gop=enc.gop, bytes=tmp.stat().st_size,
        sha256=sha256_file(tmp), src_bytes=src.stat().st_size, src_sha256=sha256_file(src),
        path=dst.relative_to(task.out).as_posix(), train_in=e.train_in, test_in=e.test_in,
        source=e.relpath,
    )  # fmt: skip
    tmp.replace(dst)
    record = {"encoding": asdict(enc), "record": rec.to_obj()}
    write_text_atomic(dst.with_suffix(".json"), json.dumps(record, sort_keys=True) + "\n")
    return e.key, rec, False


def _reason(err: DecodeError) -> str:
    tail = [ln for ln in err.stderr_tail.splitlines() if ln.strip()]
    if tail and tail[-1].startswith(("truncated:", "too short:")):
        return tail[-1]
    return "undecodable: " + (" | ".join(tail[-3:]) if tail else "ffmpeg failed")


def extract(cfg: ExtractConfig, progress: Callable[..., None] | None = None) -> ExtractResult:
    """Prepare every listed video under cfg.out; see the module docstring for the files."""
    enc = cfg.encoding()  # validates the codec before any work
    if cfg.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {cfg.dataset!r}; choose from {', '.join(DATASETS)}")
    check_ffmpeg(cfg.ffmpeg, enc.encoder)  # else a broken binary makes every video "undecodable"
    classes, entries = DATASETS[cfg.dataset](cfg.splits)
    out = Path(cfg.out)
    with locked_dir(out, "ucf3d extract"):  # two runs on one WORK would corrupt each other
        return _extract(cfg, enc, classes, entries, out, progress)


def _extract(cfg: ExtractConfig, enc: Encoding, classes: list[str], entries: list[VideoEntry],
             out: Path, progress: Callable[..., None] | None) -> ExtractResult:  # fmt: skip
    # The previous run's results no longer describe WORK once this run starts changing it:
    # until this run completes, `ucf3d shard` finds no index and refuses (instead of using
    # a stale one).
    for name in (ondisk.WORK_INDEX, WORK_SUMMARY):
        (out / name).unlink(missing_ok=True)
    resolved = {k: str(Path(v).resolve()) if isinstance(v, Path) else v
                for k, v in asdict(cfg).items()}  # fmt: skip
    config = {**resolved, "encoding": asdict(enc), "classes": classes}
    write_text_atomic(out / ondisk.WORK_CONFIG, json.dumps(config, indent=1, sort_keys=True) + "\n")
    names = "".join(f"{i} {c}\n" for i, c in enumerate(classes, 1))  # classInd.txt's format
    write_text_atomic(out / ondisk.WORK_CLASSES, names)
    tasks = [
        _Task(e, Path(cfg.videos) / e.relpath,
              out / ondisk.WORK_VIDEOS / e.cls / f"{e.key}.{enc.ext}", out, enc, cfg.ffmpeg)
        for e in entries
    ]  # fmt: skip
    records: dict[str, VideoRecord] = {}
    errors: dict[str, str] = {}
    skipped = 0
    if progress:
        progress(0, total=len(tasks))
    try:
        with contextlib.closing(_run(tasks, cfg.jobs or os.cpu_count() or 1)) as results:
            for key, res, was_skipped in results:
                if isinstance(res, VideoRecord):
                    records[key], skipped = res, skipped + was_skipped
                else:
                    errors[key] = res
                    log.warning("%s: %s", key, res)
                if progress:
                    progress(1)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(
            f"{out}: finished videos are kept; run the same command again to resume"
        ) from None
    _write_results(out, tasks, records, errors, skipped)
    log.info("extract: %d prepared (%d encoded, %d already done), %d errors -> %s",
             len(records), len(records) - skipped, skipped, len(errors), out)  # fmt: skip
    if not records:
        raise RuntimeError(f"{out}: no video could be prepared ({len(errors)} errors, "
                           f"see {out / ondisk.WORK_ERRORS})")  # fmt: skip
    if cfg.strict and errors:
        first = sorted(errors)[0]
        raise RuntimeError(f"{len(errors)} video(s) could not be prepared (--strict), e.g. "
                           f"{first}: {errors[first]}; see {out / ondisk.WORK_ERRORS}")  # fmt: skip
    return ExtractResult(len(records), len(records) - skipped, skipped, len(errors), out)


def _write_results(out: Path, tasks: list[_Task], records: dict[str, VideoRecord],
                   errors: dict[str, str], skipped: int) -> None:  # fmt: skip
    """index.jsonl, errors.jsonl and extract_summary.json, each sorted by key."""
    by_key = {t.entry.key: t for t in tasks}
    index = "".join(records[k].to_json() + "\n" for k in sorted(records))
    write_text_atomic(out / ondisk.WORK_INDEX, index)
    bad = [{"key": k, "class": by_key[k].entry.cls, "path": str(by_key[k].src),
            "reason": errors[k]} for k in sorted(errors)]  # fmt: skip
    write_text_atomic(out / ondisk.WORK_ERRORS, "".join(json.dumps(b) + "\n" for b in bad))
    summary = {
        "listed": len(tasks), "prepared": len(records), "encoded": len(records) - skipped,
        "skipped": skipped, "errors": len(errors),
        "frames": sum(r.n_frames for r in records.values()),
        "bytes": sum(r.bytes for r in records.values()),
        "src_bytes": sum(r.src_bytes for r in records.values()),
        "error_list": [{"key": b["key"], "reason": b["reason"]} for b in bad],
    }  # fmt: skip
    write_text_atomic(out / WORK_SUMMARY, json.dumps(summary, indent=1, sort_keys=True) + "\n")


def _run(tasks: list[_Task], jobs: int) -> Iterator[tuple[str, VideoRecord | str, bool]]:
    """Yield _prepare results; inline for one job, else over a WorkerPool (Ctrl-C stops at once:
    the videos being encoded are redone by the next run). Close it to stop early."""
    if jobs <= 1:
        yield from map(_prepare, tasks)
        return
    with WorkerPool(jobs) as pool:
        yield from pool.imap_unordered(_prepare, tasks)
