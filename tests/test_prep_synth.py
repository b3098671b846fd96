"""Synthetic UCF-101: layout, split lists, the file-name quirk, determinism, motion-only classes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import av
import numpy as np
import pytest

from prep.synth import MOTIONS, _Job, class_names, render, write_clip
from prep.ucf import read_splits


def test_layout_and_lists(synth_root: Path) -> None:
    lists = synth_root / "ucfTrainTestlist"
    assert (lists / "classInd.txt").read_text() == "1 MoveLeft\n2 MoveRight\n3 PushLeft\n"
    avis = sorted(
        p.relative_to(synth_root / "UCF-101").as_posix()
        for p in (synth_root / "UCF-101").rglob("*.avi")
    )
    assert len(avis) == 3 * 22
    assert "PushLeft/v_Pushleft_g01_c01.avi" in avis  # folder and file name disagree, like UCF
    train1 = (lists / "trainlist01.txt").read_text().splitlines()
    test1 = (lists / "testlist01.txt").read_text().splitlines()
    assert "MoveRight/v_MoveRight_g08_c01.avi 2" in train1
    assert "PushLeft/v_Pushleft_g07_c01.avi" in test1
    assert len(train1) == 3 * 15 and len(test1) == 3 * 7
    classes, entries = read_splits(lists)
    assert classes == ["MoveLeft", "MoveRight", "PushLeft"]
    assert sorted(e.relpath for e in entries) == avis
    e = next(e for e in entries if e.key == "v_Pushleft_g15_c01")
    assert (e.cls, e.label, e.test_in, e.train_in) == ("PushLeft", 2, (3,), (1, 2))
    assert next(e for e in entries if e.key == "v_MoveLeft_g22_c01").test_in == ()


def test_video_format(synth_root: Path) -> None:
    with av.open(str(synth_root / "UCF-101/MoveLeft/v_MoveLeft_g03_c01.avi")) as c:
        s = c.streams.video[0]
        assert (s.codec_context.name, s.width, s.height, s.average_rate) == ("mpeg4", 320, 240, 25)
        assert 20 <= sum(1 for _ in c.decode(s)) <= 33


def test_deterministic(tmp_path: Path) -> None:
    a = write_clip(tmp_path / "a.avi", 1, 3, 1, 20, seed=5)
    b = write_clip(tmp_path / "b.avi", 1, 3, 1, 20, seed=5)
    c = write_clip(tmp_path / "c.avi", 1, 3, 1, 20, seed=6)
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (a, b, c)]
    assert digest[0] == digest[1] != digest[2]


def _object_track(frames: np.ndarray, background: np.ndarray) -> np.ndarray:
    """x centre of the pixels that differ from the background, per frame (unwrapped)."""
    xs = []
    for f in frames:
        diff = np.abs(f.astype(int) - background.astype(int)).sum(-1) > 60
        cols = np.nonzero(diff.any(0))[0]
        xs.append(
            np.angle(np.exp(2j * np.pi * cols / f.shape[1]).mean()) * f.shape[1] / (2 * np.pi)
        )
    return np.unwrap(np.array(xs), period=frames.shape[2])


def test_classes_differ_by_motion_not_by_scene() -> None:
    def frames(ci: int, group: int) -> np.ndarray:
        return render(_Job(Path("x"), MOTIONS[ci], group, 1, ci, 24, 0, None))

    left, right, push = frames(0, 4), frames(1, 4), frames(2, 4)
    # same scene for every class of a group: the backgrounds agree away from the objects
    agree = (np.abs(left[0].astype(int) - right[0].astype(int)).sum(-1) < 30).mean()
    assert agree > 0.7
    assert (np.abs(left[0].astype(int) - frames(0, 5)[0].astype(int)).sum(-1) < 30).mean() < 0.3
    # a median over time shows the background; the object moves left, right, fast left
    speeds = []
    for clip in (left, right, push):
        bg = np.median(clip, axis=0)
        speeds.append(np.median(np.diff(_object_track(clip, bg))))
    assert speeds[0] < -1 and speeds[1] > 1 and speeds[2] < 2 * speeds[0]


def test_class_count_limits() -> None:
    assert len(class_names(101)) == 101 and len(set(class_names(101))) == 101
    with pytest.raises(ValueError, match="between 1 and 101"):
        class_names(102)
