"""shard: WORK's videos -> webdataset shards stored once for all three splits, + split manifests.

The official splits share UCF's 25 groups, so videos are partitioned into *families* by their role
in every split (for UCF-101: tested in split 1, 2, 3, or never). Each family is one seeded,
pre-shuffled sequence of shards `fam-<name>-NNNNN.tar`; split N trains on the families it does not
test and tests on the one it does, so nothing is stored three times and nobody filters. Writing is
deterministic: shards that already hold the expected bytes are kept, others are (re)written via
*.tmp + rename, and `shard --split 2` after `--split 1` only adds split 2's manifests.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import ondisk
from ondisk import (
    CLIP_LEN,
    COMP_CLS,
    COMP_JSON,
    COMP_META,
    FORMAT_NAME,
    FORMAT_VERSION,
    VIDEO_EXT,
    FormatError,
    ManifestRecord,
    VideoRecord,
    pack_meta,
    shard_index_name,
)
from prep.files import check_unlocked, sha256_file, tmp_name, write_text_atomic

log = logging.getLogger(__name__)

TAR_MTIME = 0  # fixed member metadata: the same inputs give the same bytes
SHARD_RE = re.compile(r"^fam-[a-z0-9]+(?:-x[0-9]+)?-\d{5}\.(?:tar|idx)(?:\.\d+\.tmp)?$")
IDX_VERSION = "v1.2"  # DALI readers.webdataset index format, as written by wds2idx


@dataclass(frozen=True)
class ShardConfig:
    work: Path
    split: int
    shards: Path = Path("shards")
    manifests: Path = Path("manifests")
    shard_size: int = 64_000_000  # target bytes per shard (a shard holds at least one video)
    seed: int = 0


@dataclass
class Shard:
    name: str
    family: str
    records: list[VideoRecord]
    sha256: str = ""
    bytes: int = 0
    members: list[tuple[str, int, int]] = field(default_factory=list)  # name, data offset, size


def read_index(work: Path) -> tuple[list[str], str, list[VideoRecord]]:
    """Classes, codec and records of an extract work directory; errors name file and line."""
    work = Path(work)
    cfg_path, index = work / ondisk.WORK_CONFIG, work / ondisk.WORK_INDEX
    check_unlocked(work)
    if not cfg_path.is_file():
        raise FormatError(f"{work}: no {ondisk.WORK_CONFIG} (run `ucf3d extract` first)")
    if not index.is_file():  # removed when a run starts, written when it completes
        raise FormatError(
            f"{work}: no {ondisk.WORK_INDEX}: the last `ucf3d extract` into it did not complete "
            "(interrupted?); run it again, it resumes"
        )
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    records = []
    with index.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise FormatError(f"{index}:{n}: not valid JSON ({e.msg})") from e
                records.append(VideoRecord.from_obj(obj, f"{index}:{n}"))
    if not records:
        raise FormatError(f"{index}: no prepared videos")
    return cfg["classes"], cfg["codec"], records


def family_name(rec: VideoRecord, splits: tuple[int, ...]) -> str:
    """`t1`: tested in split 1 (trained on in the others); `t0`: never tested; `-x3`: not in 3."""
    name = "t" + ("".join(map(str, rec.test_in)) or "0")
    absent = [k for k in splits if k not in rec.test_in and k not in rec.train_in]
    return name + ("-x" + "".join(map(str, absent)) if absent else "")


def plan(records: list[VideoRecord], cfg: ShardConfig) -> list[Shard]:
    """Families -> seeded shuffle -> shards of about cfg.shard_size bytes, in a fixed order."""
    splits = tuple(sorted({k for r in records for k in (*r.train_in, *r.test_in)}))
    families: dict[str, list[VideoRecord]] = {}
    for r in sorted(records, key=lambda r: r.key):
        families.setdefault(family_name(r, splits), []).append(r)
    shards: list[Shard] = []
    for fam in sorted(families):
        recs = families[fam]
        random.Random(f"{cfg.seed}/{fam}").shuffle(recs)  # str seeds hash the same everywhere
        current: list[VideoRecord] = []
        size = 0
        for r in recs:
            if current and size + r.bytes > cfg.shard_size:
                shards.append(Shard(f"fam-{fam}-{_count(shards, fam):05d}.tar", fam, current))
                current, size = [], 0
            current.append(r)
            size += r.bytes + 4 * 1024  # headers and the small components
        shards.append(Shard(f"fam-{fam}-{_count(shards, fam):05d}.tar", fam, current))
    return shards


def _count(shards: list[Shard], fam: str) -> int:
    return sum(s.family == fam for s in shards)


class _Sink(io.RawIOBase):
    """A write-only file that hashes and counts, optionally passing bytes on to a real file."""

    def __init__(self, f: io.BufferedWriter | None = None) -> None:
        self.h, self.n, self.f = hashlib.sha256(), 0, f

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:
        self.h.update(b)
        self.n += len(b)
        if self.f is not None:
            self.f.write(b)
        return len(b)

    def tell(self) -> int:
        return self.n


def sample_members(rec: VideoRecord, video: bytes) -> list[tuple[str, bytes]]:
    """The tar members of one sample, in sorted component order."""
    comps = {
        COMP_CLS: str(rec.label).encode("ascii"),
        COMP_JSON: (rec.to_json() + "\n").encode("utf-8"),
        COMP_META: pack_meta(rec.label, rec.n_frames, rec.height, rec.width),
        VIDEO_EXT[rec.codec]: video,
    }
    return [(f"{rec.key}.{c}", comps[c]) for c in sorted(comps)]


def _write_tar(shard: Shard, work: Path, sink: _Sink) -> None:
    """Stream the shard's tar into `sink`, recording every member's data offset and size."""
    shard.members = []
    with tarfile.open(fileobj=sink, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for rec in shard.records:
            video = (work / rec.path).read_bytes()
            if len(video) != rec.bytes or hashlib.sha256(video).hexdigest() != rec.sha256:
                raise FormatError(
                    f"{work / rec.path}: does not match {ondisk.WORK_INDEX} "
                    "(re-run `ucf3d extract`)"
                )
            for name, data in sample_members(rec, video):
                ti = tarfile.TarInfo(name)
                ti.size, ti.mtime, ti.mode = len(data), TAR_MTIME, 0o444
                ti.uid = ti.gid = 0
                ti.uname = ti.gname = ""
                start = sink.tell()
                tf.addfile(ti, io.BytesIO(data))
                shard.members.append((name, start + tarfile.BLOCKSIZE, len(data)))
    shard.sha256, shard.bytes = sink.h.hexdigest(), sink.n


def index_text(members: list[tuple[str, int, int]]) -> str:
    """DALI's index (same bytes as `wds2idx`): one line per sample of `ext offset size name`."""
    samples: list[list[str]] = []
    last = None
    for name, offset, size in members:
        key, ext = name.split(".", 1)
        if key != last:
            samples.append([])
            last = key
        samples[-1].append(f"{ext} {offset} {size} {name}")
    return f"{IDX_VERSION} {len(samples)}\n" + "".join(" ".join(s) + "\n" for s in samples)


def write_shard(shard: Shard, work: Path, out_dir: Path) -> bool:
    """Make `out_dir/shard.name` hold the expected bytes; True if (re)written, False if kept."""
    path = out_dir / shard.name
    _write_tar(shard, work, _Sink())  # expected bytes, without writing
    if not (
        path.is_file() and path.stat().st_size == shard.bytes and sha256_file(path) == shard.sha256
    ):
        tmp = tmp_name(path)
        with open(tmp, "wb") as f:
            _write_tar(shard, work, _Sink(f))
        tmp.replace(path)
        written = True
    else:
        written = False
    idx = out_dir / shard_index_name(shard.name)
    text = index_text(shard.members)
    if not idx.is_file() or idx.read_text(encoding="ascii") != text:
        write_text_atomic(idx, text)
    return written


def manifest_records(shards: list[Shard]) -> list[ManifestRecord]:
    out = []
    for s in shards:
        video = {name: (off, size) for name, off, size in s.members}
        for r in s.records:
            ext = VIDEO_EXT[r.codec]
            off, size = video[f"{r.key}.{ext}"]
            out.append(
                ManifestRecord(r.key, r.label, r.cls, r.n_frames, s.name, off, size, ext, r.sha256,
                               r.source)  # fmt: skip
            )
    return out


def shard(cfg: ShardConfig, progress: Callable[..., None] | None = None) -> dict:
    """Write (or keep) every family's shards and split cfg.split's manifests; return the summary."""
    classes, codec, records = read_index(cfg.work)
    shards = plan(records, cfg)
    subsets = {
        "train": [s for s in shards if cfg.split in s.records[0].train_in],
        "test": [s for s in shards if cfg.split in s.records[0].test_in],
    }
    for subset, chosen in subsets.items():
        if not chosen:
            raise ValueError(
                f"{cfg.work / ondisk.WORK_INDEX}: split {cfg.split} has no {subset} "
                "videos (too few groups, or that split list is missing)"
            )
    out_dir, man_dir = Path(cfg.shards), Path(cfg.manifests)
    out_dir.mkdir(parents=True, exist_ok=True)
    man_dir.mkdir(parents=True, exist_ok=True)
    if progress:
        progress(0, total=len(shards))
    written = 0
    for s in shards:  # all families: the other splits' shards are the same files
        written += write_shard(s, Path(cfg.work), out_dir)
        if progress:
            progress(1)
    names = {s.name for s in shards} | {shard_index_name(s.name) for s in shards}
    for stale in sorted(p for p in out_dir.iterdir() if SHARD_RE.match(p.name)):
        if stale.name not in names:  # an earlier layout's (other seed or size), or a killed run's
            log.info("removing stale %s", stale)
            stale.unlink()
    summary = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "split": cfg.split,
        "classes": classes,
        "shards_dir": os.path.relpath(out_dir.resolve(), man_dir.resolve()),
        "codec": codec,
        "ext": VIDEO_EXT[codec],
        "clip_len": CLIP_LEN,
        "fps": records[0].fps,
        "gop": records[0].gop,
        "seed": cfg.seed,
        "shard_size": cfg.shard_size,
        "shards": {
            s.name: {
                "bytes": s.bytes,
                "sha256": s.sha256,
                "samples": len(s.records),
                "family": s.family,
            }
            for s in shards
        },
        "subsets": {},
    }
    for subset, chosen in subsets.items():
        recs = manifest_records(chosen)
        ondisk.write_manifest(man_dir / ondisk.manifest_name(cfg.split, subset), recs)
        per_class = {c: 0 for c in classes}
        for r in recs:
            per_class[r.cls] += 1
        summary["subsets"][subset] = {
            "manifest": ondisk.manifest_name(cfg.split, subset),
            "videos": len(recs),
            "frames": sum(r.n_frames for r in recs),
            "bytes": sum(r.size for r in recs),
            "per_class": per_class,
            "families": sorted({s.family for s in chosen}),
            "shards": [s.name for s in chosen],
        }
    warnings = _warnings(Path(cfg.work), cfg.split, summary["subsets"])
    write_text_atomic(
        man_dir / ondisk.summary_name(cfg.split),
        json.dumps(summary, indent=1, sort_keys=True) + "\n",
    )
    log.info(
        "split %d: %d train / %d test videos in %d shards (%d written, %d kept) -> %s",
        cfg.split,
        summary["subsets"]["train"]["videos"],
        summary["subsets"]["test"]["videos"],
        len(shards),
        written,
        len(shards) - written,
        out_dir,
    )
    summary["written"] = written
    summary["warnings"] = warnings
    return summary


def _warnings(work: Path, split: int, subsets: dict) -> list[str]:
    """Loudly (log.warning, and returned): videos extract could not prepare, empty classes."""
    out = []
    errors = work / ondisk.WORK_ERRORS
    bad = errors.read_text(encoding="utf-8").splitlines() if errors.is_file() else []
    bad = [line for line in bad if line.strip()]
    if bad:
        first = json.loads(bad[0])
        out.append(
            f"{errors}: {len(bad)} listed video(s) could not be prepared and are not in the "
            f"manifests, e.g. {first.get('key')}: {first.get('reason')}"
        )
    for subset, sub in subsets.items():
        empty = [c for c, n in sub["per_class"].items() if n == 0]
        if empty:
            out.append(
                f"split {split}: {len(empty)} class(es) have no {subset} videos: "
                f"{', '.join(empty[:10])}{' ...' if len(empty) > 10 else ''}"
            )
    for w in out:
        log.warning("%s", w)
    return out
