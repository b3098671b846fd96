"""verify: re-read each shard of a split against its manifests and checksums; report shard + key."""

from __future__ import annotations

import hashlib
import json
import logging
import tarfile
from collections.abc import Callable
from pathlib import Path

import ondisk
from ondisk import COMP_CLS, COMP_JSON, COMP_META, FormatError, ManifestRecord, unpack_meta
from prep.files import sha256_file
from prep.shard import index_text

log = logging.getLogger(__name__)


def verify(manifests: Path, split: int, progress: Callable[..., None] | None = None) -> list[str]:
    """Every mismatch as "<shard>: <key>: <what>" (empty when all is well)."""
    summary_path = Path(manifests) / ondisk.summary_name(split)
    summary = ondisk.read_summary(summary_path)
    shards_dir = ondisk.resolve_shards_dir(summary_path, summary)
    by_shard: dict[str, list[ManifestRecord]] = {}
    for subset in ondisk.SUBSETS:
        for rec in ondisk.read_manifest(Path(manifests) / ondisk.manifest_name(split, subset)):
            by_shard.setdefault(rec.shard, []).append(rec)
    problems: list[str] = []
    if progress:
        progress(0, total=len(by_shard))
    for name in sorted(by_shard):
        problems += verify_shard(shards_dir / name, by_shard[name], summary["shards"].get(name))
        if progress:
            progress(1)
    for p in problems:
        log.warning("%s", p)
    return problems


def verify_shard(path: Path, records: list[ManifestRecord], expected: dict | None) -> list[str]:
    """Check one shard file: tar structure, members, components and video bytes of each record."""
    name = path.name
    if not path.is_file():
        return [f"{name}: shard file missing ({path})"]
    problems = []
    try:
        with tarfile.open(path, mode="r:") as tf:
            members = [(m.name, m.offset_data, m.size) for m in tf.getmembers() if m.isfile()]
    except (tarfile.TarError, OSError) as e:
        return [f"{name}: unreadable tar ({e})"]
    where = {n: (off, size) for n, off, size in members}
    keys_in_tar = {n.split(".", 1)[0] for n, _, _ in members}
    with open(path, "rb") as f:
        for rec in records:
            problems += [f"{name}: {rec.key}: {p}" for p in _check_sample(f, rec, where)]
    for key in sorted(keys_in_tar - {r.key for r in records}):
        problems.append(f"{name}: {key}: in the shard but not in the manifest")
    if expected is not None and sha256_file(path) != expected.get("sha256"):
        if not problems:
            problems.append(f"{name}: sha256 of the shard differs from the summary")
    idx = path.with_name(ondisk.shard_index_name(name))
    if not idx.is_file() or idx.read_text(encoding="ascii", errors="replace") != index_text(
        members
    ):
        problems.append(f"{name}: DALI index {idx.name} missing or does not match the shard")
    return problems


def _read(f, where: dict[str, tuple[int, int]], member: str) -> bytes | None:
    if member not in where:
        return None
    off, size = where[member]
    f.seek(off)
    return f.read(size)


def _check_sample(f, rec: ManifestRecord, where: dict[str, tuple[int, int]]) -> list[str]:
    problems = []
    video_name = f"{rec.key}.{rec.ext}"
    if where.get(video_name) != (rec.offset, rec.size):
        problems.append(f"{video_name} not at offset {rec.offset} size {rec.size}")
    f.seek(rec.offset)
    if hashlib.sha256(f.read(rec.size)).hexdigest() != rec.sha256:
        problems.append("video sha256 mismatch")
    cls = _read(f, where, f"{rec.key}.{COMP_CLS}")
    if cls is None or cls != str(rec.label).encode():
        problems.append(f"{COMP_CLS} is {cls!r}, manifest label {rec.label}")
    raw = _read(f, where, f"{rec.key}.{COMP_JSON}")
    try:
        meta_json = json.loads(raw) if raw is not None else None
    except ValueError:
        meta_json = None
    if not isinstance(meta_json, dict) or any(
        meta_json.get(k) != v
        for k, v in (
            ("key", rec.key),
            ("class", rec.cls),
            ("label", rec.label),
            ("n_frames", rec.n_frames),
            ("sha256", rec.sha256),
        )
    ) or meta_json.get("source", "") != rec.source:  # older shards and manifests both lack it
        problems.append(f"{COMP_JSON} missing or disagrees with the manifest")
        meta_json = {}
    raw = _read(f, where, f"{rec.key}.{COMP_META}")
    try:
        meta = unpack_meta(raw) if raw is not None else None
    except (FormatError, ValueError):
        meta = None
    want = {
        "label": rec.label,
        "n_frames": rec.n_frames,
        "height": meta_json.get("height"),
        "width": meta_json.get("width"),
    }
    if meta != want:
        problems.append(f"{COMP_META} is {meta}, expected {want}")
    return problems
