"""Shared session fixtures: a tiny synthetic UCF-101, extracted and sharded once per test session.

Fixtures other areas may use (all session-scoped, all built with the project's own code + ffmpeg):

- `synth_root` -> Path: `ucf3d synth` output, 3 classes (MoveLeft, MoveRight, PushLeft — whose files
  are named `v_Pushleft_*`, UCF's HandstandPushups quirk) x 22 groups x 1 clip of ~1 s (20-32
  frames, 320x240 xvid). Groups 1-7 / 8-14 / 15-21 are tested in splits 1 / 2 / 3, group 22 never.
  Videos in `synth_root / "UCF-101"`, lists in `synth_root / "ucfTrainTestlist"`.
- `work_dir` -> Path: `ucf3d extract` of it (VP9, short side 128 -> 170x128, GOP 8).
- `prepared` -> Prepared: `ucf3d shard --split 1` of it: `.shards`, `.manifests`, `.work`,
  `.split` (1), `.train_manifest`, `.test_manifest`, `.summary` (paths). Split 1 has 45 train and 21
  test videos (15 / 7 per class) in 7 shards of <= 200 kB (4 families: fam-t0/t1/t2/t3).

Treat them as read-only: copy before corrupting anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

import ondisk
from prep.extract import ExtractConfig, extract
from prep.shard import ShardConfig, shard
from prep.synth import SynthConfig, synth

TINY = {"classes": 3, "groups": 22, "clips": 1, "seconds": 1.0, "seed": 0}
TINY_SHARD_SIZE = 200_000  # several shards per family, even for the tiny set


@dataclass(frozen=True)
class Prepared:
    shards: Path
    manifests: Path
    work: Path
    split: int = 1

    @property
    def train_manifest(self) -> Path:
        return self.manifests / ondisk.manifest_name(self.split, "train")

    @property
    def test_manifest(self) -> Path:
        return self.manifests / ondisk.manifest_name(self.split, "test")

    @property
    def summary(self) -> Path:
        return self.manifests / ondisk.summary_name(self.split)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    synth(SynthConfig(root, **TINY))
    return root


@pytest.fixture(scope="session")
def work_dir(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("work")
    extract(ExtractConfig(synth_root / "UCF-101", synth_root / "ucfTrainTestlist", work))
    return work


@pytest.fixture(scope="session")
def prepared(work_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    out = tmp_path_factory.mktemp("prepared")
    cfg = ShardConfig(work_dir, 1, out / "shards", out / "manifests", TINY_SHARD_SIZE)
    shard(cfg)
    return Prepared(out / "shards", out / "manifests", work_dir, 1)


@pytest.fixture
def readonly_dir(tmp_path: Path) -> Path:
    """An existing folder no file can be written in: chmod 555, or /sys where that does not stop
    root."""
    d = tmp_path / "readonly"
    d.mkdir()
    d.chmod(0o555)
    for candidate in (d, Path("/sys")):
        try:
            (candidate / ".ucf3d-probe").write_bytes(b"")
        except OSError:
            return candidate
        (candidate / ".ucf3d-probe").unlink()
    pytest.skip("no read-only folder here")
