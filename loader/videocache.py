"""The verified local video cache the NVDEC backend (loader.gpu) reads: one file per video, copied
out of its shard once and checked against the manifest's sha256 before it is renamed into place;
names carry the checksum, so a re-extracted video never reuses a stale file."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from .source import Dataset, LoaderError, ShardReader

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """$UCF3D_CACHE, else ~/.cache/ucf3d/videos: must be a local disk for NVDEC to be fed."""
    env = os.environ.get("UCF3D_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "ucf3d" / "videos"


def cache_name(key: str, sha256: str, ext: str) -> str:
    return f"{sha256[:16]}-{key}.{ext}"


def stage_cache(dataset: Dataset, cache_dir: Path, verify: bool = False) -> list[Path]:
    """Local files for every record (copied from the shards and sha256-checked when missing)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    reader = ShardReader(dataset, verify=True)  # staging always checks the checksum
    paths, staged = [], 0
    try:
        for i, rec in enumerate(dataset.records):
            if any(c.isspace() for c in rec.key):
                raise LoaderError(f"{dataset.shard_path(i)}: sample {rec.key}: space in key")
            path = cache_dir / cache_name(rec.key, rec.sha256, rec.ext)
            if path.is_file() and path.stat().st_size == rec.size:
                if verify and _sha256(path) != rec.sha256:
                    raise LoaderError(
                        f"{path}: cached copy of {rec.key} does not match the manifest's sha256 "
                        "(delete it to stage it again)"
                    )
            else:
                data = reader.read(i)
                tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
                tmp.write_bytes(data.tobytes())
                tmp.replace(path)
                staged += 1
            paths.append(path)
    finally:
        reader.close()
    log.info("video cache %s: %d videos (%d staged now)", cache_dir, len(paths), staged)
    return paths


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
