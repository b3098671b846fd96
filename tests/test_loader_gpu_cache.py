"""The GPU backend's CPU-side parts: the verified video cache, its file lists, its up-front checks.

The NVDEC pipelines themselves run only on a GPU machine (tests/test_loader_prepared.py, and
bench/gpu_check.py); what decides which clip comes back in which order is tested here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

import ondisk
from loader import LoaderConfig, LoaderError
from loader.backend import make_batches
from loader.gpu import GpuBackend
from loader.sampling import epoch_plan
from loader.segment import file_lists
from loader.source import load_dataset
from loader.videocache import cache_name, stage_cache


def _cfg(prepared, **kw) -> LoaderConfig:
    kw = {"shards": prepared.shards, **kw}
    return LoaderConfig(manifests=prepared.manifests, split=1, num_threads=1, **kw)


def test_stage_cache_copies_and_verifies_every_video(prepared, tmp_path: Path) -> None:
    ds = load_dataset(_cfg(prepared))
    paths = stage_cache(ds, tmp_path / "cache")
    assert len(paths) == len(ds.records)
    for rec, path in zip(ds.records, paths, strict=True):
        assert path.name == cache_name(rec.key, rec.sha256, rec.ext)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == rec.sha256
    stamp = [p.stat().st_mtime_ns for p in paths]
    assert stage_cache(ds, tmp_path / "cache", verify=True) == paths  # nothing staged again
    assert [p.stat().st_mtime_ns for p in paths] == stamp


def test_stage_cache_names_shard_and_key_of_a_corrupt_sample(prepared, tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    shutil.copytree(prepared.shards, shards)
    rec = ondisk.read_manifest(prepared.train_manifest)[3]
    with (shards / rec.shard).open("r+b") as f:  # flip one byte inside the video's data
        f.seek(rec.offset + rec.size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    ds = load_dataset(_cfg(prepared, shards=shards))
    with pytest.raises(LoaderError, match=rf"{rec.shard}: sample {rec.key}: sha256 mismatch"):
        stage_cache(ds, tmp_path / "cache")
    assert not list((tmp_path / "cache").glob(f"*{rec.key}*"))  # nothing half-written left


def test_stage_cache_verify_catches_a_damaged_cached_copy(prepared, tmp_path: Path) -> None:
    ds = load_dataset(_cfg(prepared))
    paths = stage_cache(ds, tmp_path / "cache")
    data = bytearray(paths[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    paths[0].write_bytes(bytes(data))
    stage_cache(ds, tmp_path / "cache")  # size only: a cheap check passes
    with pytest.raises(LoaderError, match="does not match the manifest's sha256"):
        stage_cache(ds, tmp_path / "cache", verify=True)


def test_file_lists_deal_chunks_round_robin_in_plan_order(prepared) -> None:
    cfg = _cfg(prepared, batch_size=12, gpu_batch=5, gpu_pipelines=3)
    ds = load_dataset(cfg)
    plan = epoch_plan(cfg, ds.n_frames, ds.height, ds.width, epoch=2)
    batches = make_batches(ds, plan, cfg.batch_size, 2)
    chunks = [b.requests[s : s + 5] for b in batches for s in range(0, len(b), 5)]
    paths = [Path(f"/cache/{r.key}.webm") for r in ds.records]
    per_pipe, texts = file_lists(chunks, paths, 3, 5, cfg.clip_len)
    assert len(per_pipe) == 3
    # reading the pipelines round-robin, chunk by chunk, gives back the plan (padding dropped)
    lines = [t.splitlines() for t in texts]
    got = []
    for k, chunk in enumerate(chunks):
        pipe_lines = lines[k % 3][(k // 3) * 5 : (k // 3) * 5 + 5]
        assert len(pipe_lines) == 5  # whole reader batches
        got += pipe_lines[: len(chunk)]
        last = pipe_lines[len(chunk) - 1].split()
        for pad in pipe_lines[len(chunk) :]:  # padding repeats the last request (own id)
            assert pad.split()[0] == last[0] and pad.split()[2:] == last[2:]
    assert len(got) == len(plan)
    for line, req in zip(got, plan, strict=True):
        path, _, start, end = line.split()
        assert path == str(paths[req["index"]])
        assert (int(start), int(end)) == (req["start"], req["start"] + cfg.clip_len)
    for pipe_lines in lines:  # the id column counts each list's lines
        assert [int(line.split()[1]) for line in pipe_lines] == list(range(len(pipe_lines)))


def test_file_lists_refuse_loop_padded_requests(prepared) -> None:
    cfg = _cfg(prepared)
    ds = load_dataset(cfg)
    plan = epoch_plan(cfg, ds.n_frames, ds.height, ds.width, epoch=0)[:4].copy()
    plan["frames"][0] = np.arange(cfg.clip_len) % 5  # what a 5-frame video's clip looks like
    with pytest.raises(LoaderError, match="contiguous windows"):
        file_lists([plan], [Path("x")] * len(ds.records), 2, 4, cfg.clip_len)


def test_gpu_backend_rejects_videos_shorter_than_a_clip(prepared, tmp_path: Path) -> None:
    cfg = _cfg(prepared, decode="gpu", cache_dir=tmp_path)
    ds = load_dataset(cfg)
    n = ds.n_frames.copy()
    n[1] = 9
    short = dataclasses.replace(ds, n_frames=n)
    with pytest.raises(LoaderError, match=rf"sample {ds.records[1].key}: 9 frames"):
        GpuBackend(cfg, short)
