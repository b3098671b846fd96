"""ClipLoader end to end (CPU backend): shapes, labels, frame order, coverage, seeds, ranks, errors.

The videos (tests/loaderdata.py) carry their frame index in pixel blocks, so a clip's frames can be
read back and compared with the plan's frame indices.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import loaderdata
import numpy as np
import pytest

from loader import Batch, ClipLoader, LoaderConfig, LoaderError

LENGTHS = [20, 9, 40, 33, 50, 16, 64, 5, 17, 31, 23, 230]  # 9, 5: loop-padded; 230: seeks


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return loaderdata.build_world(tmp_path_factory.mktemp("loaderworld"), lengths=LENGTHS)


def make(world: dict, **kw) -> ClipLoader:
    base = {"manifests": world["manifests"], "batch_size": 5, "num_threads": 2}
    return ClipLoader(LoaderConfig(**{**base, **kw}))


def label_of(key: str) -> int:
    return int(key.split("_")[1].removeprefix("Class"))


def read_clip_indices(batch: Batch, plan: np.ndarray, loader: ClipLoader) -> list[list[int]]:
    """Frame indices drawn in each output clip, read through the plan's crop window and flip."""
    clips = batch.clips.astype("float32").numpy()  # (N, 3, T, S, S)
    mean = np.array(loader.cfg.mean, np.float32)[:, None, None, None]
    std = np.array(loader.cfg.std, np.float32)[:, None, None, None]
    out = []
    for clip, req in zip(clips, plan, strict=True):
        pixels = (clip * std + mean).transpose(1, 2, 3, 0)  # (T, S, S, 3) 0-255
        ds = loader.dataset
        hw = (int(ds.height[req["index"]]), int(ds.width[req["index"]]))
        out.append(
            [loaderdata.read_index(f, tuple(req["roi"]), bool(req["flip"]), hw) for f in pixels]
        )
    return out


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_shapes_dtypes_and_labels(world: dict, dtype: str) -> None:
    with make(world, dtype=dtype) as loader:
        assert loader.classes == world["classes"] and len(loader) == 3
        batches = list(loader.epoch(0))
    assert [b.clips.shape[0] for b in batches] == [5, 5, 2]  # last partial batch included
    for b in batches:
        assert list(b.clips.shape[1:]) == [3, 16, 112, 112]
        assert str(b.clips.dtype).endswith(dtype)
        assert str(b.labels.dtype).endswith("int64")
        assert b.labels.numpy().tolist() == [label_of(k) for k in b.keys]


@pytest.mark.parametrize("mode", ["train", "video", "clip"])
def test_frames_consecutive_in_order_as_planned(world: dict, mode: str) -> None:
    # train at scale 1 keeps the index blocks (frame centre) inside every corner crop
    subset = "train" if mode == "train" else "test"
    with make(world, mode=mode, subset=subset, scales=(1.0,), seed=7) as loader:
        plan = loader.plan(2)
        got, pos = [], 0
        for b in loader.epoch(2):
            got += read_clip_indices(b, plan[pos : pos + len(b.keys)], loader)
            assert b.keys == [
                loader.dataset.records[i].key for i in plan["index"][pos:][: len(b.keys)]
            ]
            pos += len(b.keys)
    assert pos == len(plan)
    n = loader.dataset.n_frames[plan["index"]]
    for idx, req, nf in zip(got, plan, n, strict=True):
        assert idx == req["frames"].tolist()
        assert idx[0] == req["start"]
        assert idx == [(req["start"] + i) % nf for i in range(16)]  # consecutive, loop-padded
    if mode == "train":
        assert set(plan["flip"].tolist()) == {0, 1} and len(set(plan["corner"].tolist())) > 1


@pytest.mark.parametrize("mode", ["clip", "video"])
@pytest.mark.parametrize("world_size", [1, 2])
def test_eval_covers_every_video_once(world: dict, mode: str, world_size: int) -> None:
    seen: Counter = Counter()
    for rank in range(world_size):
        with make(world, mode=mode, subset="test", rank=rank, world_size=world_size) as loader:
            sizes = []
            for b in loader.epoch(0):
                seen.update(zip(b.keys, b.clip_ids.tolist(), strict=True))
                sizes.append(len(b.keys))
            assert len(sizes) == len(loader)
    per_video = 3 if mode == "clip" else None
    for key, n in zip((r.key for r in world["records"]), LENGTHS, strict=True):
        want = per_video or max(n // 16, 1)
        assert [seen[(key, c)] for c in range(want)] == [1] * want, key
    assert sum(seen.values()) == sum((3 if mode == "clip" else max(n // 16, 1)) for n in LENGTHS)


def test_hara_windows_decode_the_loop_padded_tail(world: dict) -> None:
    """windows="hara": each video once, ceil((n-1)/16) windows, the last one padded from itself."""
    with make(world, mode="video", subset="test", windows="hara", seed=7) as loader:
        plan = loader.plan(0)
        got, keys, pos = [], [], 0
        for b in loader.epoch(0):
            got += read_clip_indices(b, plan[pos : pos + len(b.keys)], loader)
            keys += b.keys
            pos += len(b.keys)
    assert got == plan["frames"].tolist()
    counts = Counter(keys)
    for key, n in zip((r.key for r in world["records"]), LENGTHS, strict=True):
        assert counts[key] == max(-(-(n - 1) // 16), 1), key
    tail = got[keys.index(world["records"][0].key) + 1]  # 20 frames: windows at 0 and 16
    assert tail == [16, 17, 18, 19] * 4


def test_same_seed_same_clips(world: dict) -> None:
    def first_epoch(seed: int) -> tuple[list[str], np.ndarray]:
        with make(world, seed=seed) as loader:
            bs = list(loader.epoch(0))
        return [k for b in bs for k in b.keys], np.concatenate([b.clips.numpy() for b in bs])

    keys_a, clips_a = first_epoch(1)
    keys_b, clips_b = first_epoch(1)
    assert keys_a == keys_b and np.array_equal(clips_a, clips_b)
    keys_c, _ = first_epoch(2)
    assert keys_c != keys_a and sorted(keys_c) == sorted(keys_a)


def test_train_ranks_disjoint_and_complete(world: dict) -> None:
    keys = []
    for rank in range(3):
        with make(world, rank=rank, world_size=3) as loader:
            keys.append([k for b in loader.epoch(5) for k in b.keys])
    flat = [k for part in keys for k in part]
    assert len(flat) == len(set(flat)) == len(world["records"])


def test_paddle_env_gives_rank(world: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PADDLE_TRAINER_ID", "1")
    monkeypatch.setenv("PADDLE_TRAINERS_NUM", "2")
    loader = make(world)
    assert (loader.rank, loader.world_size) == (1, 2)
    assert len(loader.plan(0)) == len(world["records"]) // 2


def corrupted_copy(world: dict, tmp_path: Path, how: str) -> tuple[Path, str, str]:
    """Copy manifests + shards, damage one video in its shard; (manifests, shard, key)."""
    shutil.copytree(world["shards"], tmp_path / "shards")
    shutil.copytree(world["manifests"], tmp_path / "manifests")
    rec = world["records"][6]
    with open(tmp_path / "shards" / rec.shard, "r+b") as f:
        if how == "header":
            f.seek(rec.offset)
            f.write(b"\0" * 64)
        else:
            f.seek(rec.offset + rec.size // 2)
            byte = f.read(1)
            f.seek(rec.offset + rec.size // 2)
            f.write(bytes([byte[0] ^ 0xFF]))
    return tmp_path / "manifests", rec.shard, rec.key


def test_corrupt_sample_names_shard_and_key(world: dict, tmp_path: Path) -> None:
    manifests, shard, key = corrupted_copy(world, tmp_path, "header")
    loader = ClipLoader(
        LoaderConfig(
            manifests=manifests,
            shards=tmp_path / "shards",
            batch_size=5,
            num_threads=2,
            mode="clip",
            subset="test",
        )
    )
    with pytest.raises(LoaderError, match=f"{shard}: sample {key}: cannot decode"):
        list(loader.epoch(0))
    loader.close()


def test_checksum_mismatch_names_shard_and_key(world: dict, tmp_path: Path) -> None:
    manifests, shard, key = corrupted_copy(world, tmp_path, "flip")
    loader = ClipLoader(
        LoaderConfig(
            manifests=manifests,
            shards=tmp_path / "shards",
            batch_size=5,
            num_threads=2,
            verify=True,
        )
    )
    with pytest.raises(LoaderError, match=f"{shard}: sample {key}: sha256 mismatch"):
        list(loader.epoch(0))
    loader.close()


def test_abandoned_epoch_then_full_epoch(world: dict) -> None:
    with make(world) as loader:
        it = loader.epoch(0)
        next(it)
        it.close()  # e.g. a benchmark stops mid-epoch
        assert sum(len(b.keys) for b in loader.epoch(1)) == len(world["records"])


def test_epochs_back_to_back_are_the_epochs_one_after_the_other(world: dict) -> None:
    """ClipLoader.epochs (what bench feed runs; the hand-over ahead spans its epochs): the same
    batches, keys and pixels as epoch() called for each in turn."""
    with make(world, seed=3) as loader:
        one_by_one = [b for e in (0, 1) for b in loader.epoch(e)]
    with make(world, seed=3) as loader:
        chained = list(loader.epochs([0, 1]))
    assert [b.keys for b in chained] == [b.keys for b in one_by_one]
    assert len(chained) == 2 * len(loader.batches(0))
    for a, b in zip(chained, one_by_one, strict=True):
        assert np.array_equal(a.clips.numpy(), b.clips.numpy())
        assert np.array_equal(a.labels.numpy(), b.labels.numpy())
    with make(world, seed=3) as loader:
        it = loader.epochs([0, 1])
        next(it)
        it.close()  # stopped mid-epoch: the epoch under way is closed, a later one runs whole
        assert sum(len(b.keys) for b in loader.epoch(2)) == len(world["records"])


def test_pipeline_runs_on_across_epochs_and_rebuilds_off_plan(world: dict) -> None:
    """Consecutive epochs share one pipeline (no drain and cold start between them) and give
    the clips a fresh loader gives; a skipped, repeated or abandoned epoch rebuilds, still right."""

    def epoch_of(loader: ClipLoader, e: int) -> tuple[list[str], np.ndarray]:
        bs = list(loader.epoch(e))
        return [k for b in bs for k in b.keys], np.concatenate([b.clips.numpy() for b in bs])

    def same(a: tuple[list[str], np.ndarray], b: tuple[list[str], np.ndarray]) -> bool:
        return a[0] == b[0] and np.array_equal(a[1], b[1])

    fresh = {}
    for e in (0, 1, 2, 4):
        with make(world, seed=5) as loader:
            fresh[e] = epoch_of(loader, e)
    with make(world, seed=5) as loader:
        assert same(epoch_of(loader, 0), fresh[0])
        pipe = loader.backend._pipe
        assert loader.backend._pending  # epoch 1's first batches were fed while 0 finished
        assert same(epoch_of(loader, 1), fresh[1]) and same(epoch_of(loader, 2), fresh[2])
        assert loader.backend._pipe is pipe  # carried on: not rebuilt
        assert same(epoch_of(loader, 4), fresh[4])  # skipped epoch 3: rebuilt from 4
        assert loader.backend._pipe is not pipe
        assert same(epoch_of(loader, 4), fresh[4])  # the same epoch again
        it = loader.epoch(0)
        next(it)
        it.close()  # abandoned mid-epoch
        assert same(epoch_of(loader, 1), fresh[1])


def test_trimmed_streams_give_the_same_clips(world: dict) -> None:
    """The CPU backend hands DALI only the needed WebM clusters; the clips must not change."""
    from loader.webm import index_webm

    data = (world["shards"] / world["records"][-1].shard).read_bytes()
    rec = world["records"][-1]
    idx = index_webm(data[rec.offset : rec.offset + rec.size])
    assert idx is not None and idx.n_frames == rec.n_frames and len(idx.offsets) > 1
    assert index_webm(b"not a webm at all") is None
    clips = {}
    for trim in (True, False):
        with make(world, trim=trim, seed=11, mode="video", subset="test") as loader:
            clips[trim] = np.concatenate([b.clips.numpy() for b in loader.epoch(0)])
    assert np.array_equal(clips[True], clips[False])


def test_cli_bench_loader(world: dict) -> None:
    import json

    from click.testing import CliRunner

    from cli import main

    args = [
        "bench",
        "loader",
        "--split",
        "1",
        "--manifests",
        str(world["manifests"]),
        "--batch-size",
        "4",
        "--seconds",
        "1",
        "--warmup",
        "0",
        "--threads",
        "2",
    ]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert out["baseline"] == "ours" and out["decode"] == "cpu" and out["clips_per_s"] > 0
    assert {"frames_per_s", "cpu_cores_used", "clips_per_cpu_s", "threads"} <= set(out)
    res = CliRunner().invoke(main, [*args, "--baseline", "jpeg"])
    assert res.exit_code == 2 and "--videos" in res.output
