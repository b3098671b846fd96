"""Clip plans (pure numpy): Hara's temporal sampling, corner crops, determinism, rank sharding."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from loader.config import LoaderConfig
from loader.sampling import (
    centre_roi,
    epoch_plan,
    eval_starts,
    hara_corner_roi,
    train_order,
)

N = np.array([40, 9, 16, 17, 175, 31, 64, 100, 23, 5, 300, 16, 18])  # frames per video
H = np.full(len(N), 128)
W = np.array([170, 128, 170, 171, 170, 128, 150, 170, 170, 170, 170, 170, 200])


def cfg(**kw) -> LoaderConfig:
    base = {"manifests": Path("/nonexistent"), "batch_size": 4, "num_threads": 1}
    return LoaderConfig(**{**base, **kw})


def test_train_plan_is_a_full_permutation_with_valid_windows() -> None:
    c = cfg(seed=3)
    plan = epoch_plan(c, N, H, W, epoch=0)
    assert sorted(plan["index"].tolist()) == list(range(len(N)))
    n = N[plan["index"]]
    assert (plan["start"] >= 0).all() and (plan["start"] <= np.maximum(n - 16, 0)).all()
    for row, nf in zip(plan, n, strict=True):
        want = (row["start"] + np.arange(16)) % nf  # consecutive; loop padding when nf < 16
        assert row["frames"].tolist() == want.tolist()
        if nf < 16:
            assert row["start"] == 0
    assert set(plan["corner"].tolist()) <= set(range(5))
    assert np.isclose(plan["scale"][:, None], np.array(c.scales)[None, :]).any(axis=1).all()


def test_train_plan_seeded_per_epoch() -> None:
    a, b = epoch_plan(cfg(seed=1), N, H, W, 0), epoch_plan(cfg(seed=1), N, H, W, 0)
    assert a.tobytes() == b.tobytes()
    other = epoch_plan(cfg(seed=1), N, H, W, 1)
    assert other["index"].tolist() != a["index"].tolist()
    assert epoch_plan(cfg(seed=2), N, H, W, 0)["index"].tolist() != a["index"].tolist()
    # the whole set is shuffled, not a buffer: over epochs every video visits many positions
    positions = Counter()
    for e in range(200):
        positions.update(zip(train_order(len(N), 0, e)[:3].tolist(), [0, 0, 0], strict=True))
    assert len(positions) == len(N)


def test_flip_switch_changes_nothing_else() -> None:
    many = np.full(200, 40)
    h, w = np.full(200, 128), np.full(200, 170)
    on = epoch_plan(cfg(seed=4), many, h, w, 0)
    off = epoch_plan(cfg(seed=4, flip=False), many, h, w, 0)
    assert 50 < on["flip"].sum() < 150 and off["flip"].sum() == 0
    for field in ("index", "start", "scale", "corner", "roi"):
        assert np.array_equal(on[field], off[field])


def test_start_align_quantises_starts() -> None:
    plan = epoch_plan(cfg(start_align=8), N, H, W, 0)
    long = N[plan["index"]] >= 16
    assert (plan["start"][long] % 8 == 0).all()
    assert (plan["start"] + 16 <= np.maximum(N[plan["index"]], 16)).all()


@pytest.mark.parametrize("world", [2, 3, 5])
@pytest.mark.parametrize("mode", ["train", "clip", "video"])
def test_ranks_disjoint_and_complete(world: int, mode: str) -> None:
    c = cfg(mode=mode, subset="train" if mode == "train" else "test")
    full = epoch_plan(c, N, H, W, 4, 0, 1)
    parts = [epoch_plan(c, N, H, W, 4, r, world) for r in range(world)]
    seen = Counter((int(p["index"]), int(p["clip"])) for part in parts for p in part)
    assert max(seen.values()) == 1
    assert set(seen) == {(int(p["index"]), int(p["clip"])) for p in full}
    # a video's clip does not depend on the world size
    by_key = {(int(p["index"]), int(p["clip"])): p.tobytes() for p in full}
    assert all(by_key[(int(p["index"]), int(p["clip"]))] == p.tobytes() for pt in parts for p in pt)


def test_drop_last_gives_equal_full_batches() -> None:
    c = cfg(drop_last=True, batch_size=2)
    sizes = {len(epoch_plan(c, N, H, W, 0, r, 3)) for r in range(3)}
    assert sizes == {4}  # 13 videos / 3 ranks -> 4 each -> 2 full batches of 2


def test_eval_starts() -> None:
    assert eval_starts(100, "clip", 16, 3) == [0, 42, 84]
    assert eval_starts(10, "clip", 16, 3) == [0, 0, 0]
    assert eval_starts(64, "video", 16, 3) == [0, 16, 32, 48]
    assert eval_starts(63, "video", 16, 3) == [0, 16, 32]
    assert eval_starts(9, "video", 16, 3) == [0]


def test_eval_plan_every_video_once_in_order() -> None:
    plan = epoch_plan(cfg(mode="video", subset="test"), N, H, W, 0)
    videos = list(dict.fromkeys(plan["index"].tolist()))
    assert videos == list(range(len(N)))
    assert len(plan) == sum(max(n // 16, 1) for n in N)
    assert (plan["flip"] == 0).all() and (plan["corner"] == 0).all()


def test_hara_windows_count_as_his_test_loader() -> None:
    """Hara's `range(1, n_frames, 16)`: ceil((n - 1) / 16) windows (one for a 1-frame video)."""
    for n in range(1, 120):
        starts = eval_starts(n, "video", 16, 3, windows="hara")
        assert len(starts) == max(math.ceil((n - 1) / 16), 1)
        assert starts == [j - 1 for j in range(1, max(n, 2), 16)]  # his 1-based frame numbers
        assert eval_starts(n, "video", 16, 3) == (list(range(0, n - 15, 16)) if n >= 16 else [0])


def test_hara_windows_plan_every_video_once_tail_loop_padded() -> None:
    plan = epoch_plan(cfg(mode="video", subset="test", windows="hara"), N, H, W, 0)
    videos = list(dict.fromkeys(plan["index"].tolist()))
    assert videos == list(range(len(N)))  # each video once, in order, its windows together
    assert Counter(plan["index"].tolist()) == {
        v: max(math.ceil((n - 1) / 16), 1) for v, n in enumerate(N.tolist())
    }
    for row in plan:
        n, start = int(N[row["index"]]), int(row["start"])
        own = list(range(start, min(n, start + 16)))  # the window's real frames, then repeated
        assert row["frames"].tolist() == [own[i % len(own)] for i in range(16)]
    tail = plan[plan["index"] == 0][-1]  # 40 frames: windows at 0, 16, 32; the last has 8
    assert tail["frames"].tolist() == [*range(32, 40), *range(32, 40)]
    full = epoch_plan(cfg(mode="video", subset="test"), N, H, W, 0)
    for row in full:  # whole windows are the same in both, partial ones only in "hara"
        same = plan[(plan["index"] == row["index"]) & (plan["start"] == row["start"])]
        assert same["frames"].tolist() == [row["frames"].tolist()]


def test_hara_windows_need_cpu_decode() -> None:
    with pytest.raises(ValueError, match="windows 'hara' .* use decode='cpu'"):
        cfg(mode="video", subset="test", windows="hara", decode="gpu")
    cfg(mode="clip", subset="test", windows="hara", decode="gpu")  # only video mode has windows
    with pytest.raises(ValueError, match="windows must be one of full, hara"):
        cfg(windows="all")


def test_hara_corner_roi() -> None:
    h, w = np.array([128] * 5), np.array([170] * 5)
    roi = hara_corner_roi(h, w, np.array([0.5] * 5), np.arange(5))
    assert roi.tolist() == [
        [32, 53, 96, 117],  # centre: (85 - 32, 64 - 32) .. (85 + 32, 64 + 32)
        [0, 0, 64, 64],
        [0, 106, 64, 170],
        [64, 0, 128, 64],
        [64, 106, 128, 170],
    ]
    odd = hara_corner_roi(np.array([128]), np.array([170]), np.array([2**-0.25]), np.array([0]))
    assert odd.tolist() == [[11, 32, 117, 138]]  # int(128 * 0.8409) = 107 -> 53 each side
    assert centre_roi(np.array([128]), np.array([170])).tolist() == [[0, 21, 128, 149]]
