"""Random access to the videos in the shards: manifest, summary, frame sizes and byte reads."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import ondisk

from .config import LoaderConfig

log = logging.getLogger(__name__)


class LoaderError(RuntimeError):
    """A sample or shard the loader cannot use; the message names the shard and the key."""


@dataclass(frozen=True)
class Dataset:
    """One split subset as the loader sees it; arrays are aligned with `records`."""

    records: list[ondisk.ManifestRecord]
    shards_dir: Path
    classes: list[str]
    n_frames: np.ndarray  # int64 (V,)
    height: np.ndarray  # int64 (V,), from each sample's meta.i32 component
    width: np.ndarray  # int64 (V,)

    def __len__(self) -> int:
        return len(self.records)

    def shard_path(self, index: int) -> Path:
        return self.shards_dir / self.records[index].shard


def held_out_groups(keys: list[str], fraction: float) -> set[str]:
    """The groups held out of `keys` for model selection: round(fraction x groups), at least one.

    A group is UCF's gGG of v_<Class>_gGG_cCC (the same scene or actor; the official splits hold
    out whole groups, so a video's neighbours never sit on both sides); a key without one is its
    own group. The choice is seeded: the same keys and fraction always give the same groups.
    """
    groups = sorted({_group(k) for k in keys})
    n = min(max(round(fraction * len(groups)), 1), len(groups) - 1)
    if n < 1:
        raise LoaderError(f"cannot hold out {fraction} of {len(groups)} group(s): need two or more")
    picked = np.random.default_rng(0).choice(len(groups), n, replace=False)
    return {groups[i] for i in picked}


def _group(key: str) -> str:
    m = re.search(r"_(g\d+)_c\d+$", key)
    return m.group(1) if m else key


def select_part(
    records: list[ondisk.ManifestRecord], cfg: LoaderConfig
) -> list[ondisk.ManifestRecord]:
    """cfg.part of the records: all, or those outside / inside the held-out groups."""
    if cfg.part == "all":
        return records
    held = held_out_groups([r.key for r in records], cfg.holdout)
    return [r for r in records if (_group(r.key) in held) == (cfg.part == "held")]


def load_dataset(cfg: LoaderConfig) -> Dataset:
    """Read the manifest and summary, and each video's height/width from its shard's meta.i32."""
    summary = ondisk.read_summary(cfg.summary_path)
    records = select_part(ondisk.read_manifest(cfg.manifest_path), cfg)
    if cfg.shards is not None:
        shards_dir = cfg.shards
    else:  # relative to the summary's own folder (ondisk contract)
        shards_dir = ondisk.resolve_shards_dir(cfg.summary_path, summary)
    classes = list(summary["classes"])
    for rec in records:
        if not 0 <= rec.label < len(classes) or classes[rec.label] != rec.cls:
            raise LoaderError(
                f"{cfg.manifest_path}: sample {rec.key}: label {rec.label} / class "
                f"{rec.cls!r} does not match the summary's class list"
            )
    meta = _read_meta(shards_dir, {r.shard for r in records})
    height = np.empty(len(records), np.int64)
    width = np.empty(len(records), np.int64)
    for i, rec in enumerate(records):
        m = meta.get((rec.shard, rec.key))
        if m is None:
            raise LoaderError(
                f"{shards_dir / rec.shard}: sample {rec.key}: no {ondisk.COMP_META} member"
            )
        if m["n_frames"] != rec.n_frames or m["label"] != rec.label:
            raise LoaderError(
                f"{shards_dir / rec.shard}: sample {rec.key}: {ondisk.COMP_META} "
                f"says {m}, manifest says n_frames={rec.n_frames} label={rec.label}"
            )
        height[i], width[i] = m["height"], m["width"]
    n_frames = np.array([r.n_frames for r in records], np.int64)
    if (n_frames < 1).any():
        bad = records[int(np.argmin(n_frames))]
        raise LoaderError(f"{shards_dir / bad.shard}: sample {bad.key}: no frames")
    log.info(
        "%s%s: %d videos in %d shards under %s",
        cfg.manifest_path.name,
        "" if cfg.part == "all" else f" ({cfg.part} of holdout {cfg.holdout:g})",
        len(records),
        len({r.shard for r in records}),
        shards_dir,
    )
    return Dataset(records, shards_dir, classes, n_frames, height, width)


def _read_meta(shards_dir: Path, shards: set[str]) -> dict[tuple[str, str], dict[str, int]]:
    """(shard, key) -> meta fields, from the small meta.i32 members (tar headers are skimmed)."""
    suffix = "." + ondisk.COMP_META
    out: dict[tuple[str, str], dict[str, int]] = {}
    for shard in sorted(shards):
        path = shards_dir / shard
        try:
            with tarfile.open(path, "r:") as tar:
                for member in tar:
                    if member.isfile() and member.name.endswith(suffix):
                        f = tar.extractfile(member)
                        assert f is not None
                        key = member.name[: -len(suffix)]
                        try:
                            out[(shard, key)] = ondisk.unpack_meta(f.read())
                        except ValueError as e:
                            raise LoaderError(f"{path}: sample {key}: {e}") from e
        except (OSError, tarfile.TarError) as e:
            raise LoaderError(f"{path}: cannot read shard ({e})") from e
    return out


class ShardReader:
    """Reads one video's bytes by (shard, offset, size) with cached file descriptors (pread)."""

    def __init__(self, dataset: Dataset, verify: bool = False) -> None:
        self.dataset = dataset
        self.verify = verify
        self._fds: dict[str, int] = {}

    def read(self, index: int) -> np.ndarray:
        """The encoded video of record `index` as a 1-D uint8 array."""
        rec = self.dataset.records[index]
        fd = self._fds.get(rec.shard)
        path = self.dataset.shards_dir / rec.shard
        try:
            if fd is None:
                fd = self._fds[rec.shard] = os.open(path, os.O_RDONLY)
            data = os.pread(fd, rec.size, rec.offset)
        except OSError as e:
            raise LoaderError(f"{path}: sample {rec.key}: cannot read ({e})") from e
        if len(data) != rec.size:
            raise LoaderError(
                f"{path}: sample {rec.key}: truncated ({len(data)} of {rec.size} "
                f"bytes at offset {rec.offset})"
            )
        if self.verify and hashlib.sha256(data).hexdigest() != rec.sha256:
            raise LoaderError(f"{path}: sample {rec.key}: sha256 mismatch (corrupt shard?)")
        return np.frombuffer(data, np.uint8)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __del__(self) -> None:  # best effort; close() is the real API
        try:
            self.close()
        except Exception:
            pass
