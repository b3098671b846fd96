"""shard + verify: families, manifests, byte offsets, determinism, DALI and webdataset readers."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import ondisk
from prep.extract import ExtractConfig, extract
from prep.shard import ShardConfig, shard
from prep.verify import verify

TINY_SHARD_SIZE = 200_000


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_families_and_manifests(prepared, work_dir: Path) -> None:
    summary = ondisk.read_summary(prepared.summary)
    assert summary["classes"] == ["MoveLeft", "MoveRight", "PushLeft"]
    assert ondisk.resolve_shards_dir(prepared.summary, summary) == prepared.shards.resolve()
    train, test = summary["subsets"]["train"], summary["subsets"]["test"]
    assert train["families"] == ["t0", "t2", "t3"] and test["families"] == ["t1"]
    assert train["per_class"] == {"MoveLeft": 15, "MoveRight": 15, "PushLeft": 15}
    assert test["per_class"] == {"MoveLeft": 7, "MoveRight": 7, "PushLeft": 7}
    tr, te = (
        ondisk.read_manifest(prepared.train_manifest),
        ondisk.read_manifest(prepared.test_manifest),
    )
    assert {int(r.key.split("_g")[1][:2]) for r in te} == set(range(1, 8))  # unseen groups only
    assert not {r.key for r in tr} & {r.key for r in te}
    index = {json.loads(x)["key"]: json.loads(x) for x in (work_dir / "index.jsonl").open()}
    assert {r.key for r in tr} | {r.key for r in te} == set(index)
    assert [r.shard for r in tr] == sorted(r.shard for r in tr)  # manifest order = shard order
    assert [r.key for r in te] != sorted(r.key for r in te)  # pre-shuffled
    for r in tr + te:
        rec = index[r.key]
        assert (r.label, r.cls, r.n_frames, r.sha256, r.ext) == (
            rec["label"],
            rec["class"],
            rec["n_frames"],
            rec["sha256"],
            "webm",
        )
        with open(prepared.shards / r.shard, "rb") as f:  # random access by offset and size
            f.seek(r.offset)
            assert f.read(r.size) == (work_dir / rec["path"]).read_bytes()
    assert sorted(p.name for p in prepared.shards.iterdir()) == sorted(
        [n for n in summary["shards"]] + [ondisk.shard_index_name(n) for n in summary["shards"]]
    )


def test_index_files_match_wds2idx(prepared, tmp_path: Path) -> None:
    from wds2idx import IndexCreator

    for tar in sorted(prepared.shards.glob("*.tar")):
        with IndexCreator(str(tar), str(tmp_path / "x.idx"), verbose=False) as ic:
            ic.create_index()
        assert (tmp_path / "x.idx").read_bytes() == tar.with_suffix(".idx").read_bytes()


def test_other_split_reuses_shards_and_rerun_is_byte_identical(prepared, tmp_path: Path) -> None:
    shards, manifests = tmp_path / "shards", tmp_path / "manifests"
    shutil.copytree(prepared.shards, shards)
    shutil.copytree(prepared.manifests, manifests)
    before = _files(shards)
    s2 = shard(ShardConfig(prepared.work, 2, shards, manifests, TINY_SHARD_SIZE))
    assert s2["written"] == 0 and _files(shards) == before
    assert s2["subsets"]["test"]["families"] == ["t2"]
    s1 = shard(ShardConfig(prepared.work, 1, shards, manifests, TINY_SHARD_SIZE))
    assert s1["written"] == 0
    assert _files(manifests) == {
        **_files(prepared.manifests),
        **{k: v for k, v in _files(manifests).items() if k.startswith("split2")},
    }
    other = shard(ShardConfig(prepared.work, 1, shards, manifests, TINY_SHARD_SIZE, seed=1))
    assert other["written"] > 0  # another seed: another order, rewritten, stale files removed
    assert sorted(p.name for p in shards.iterdir()) == sorted(
        [*other["shards"], *(ondisk.shard_index_name(n) for n in other["shards"])]
    )


def test_fresh_extract_and_shard_are_byte_identical(prepared, synth_root: Path, tmp_path: Path):
    work = tmp_path / "work"
    extract(ExtractConfig(synth_root / "UCF-101", synth_root / "ucfTrainTestlist", work, jobs=2))
    assert (work / "index.jsonl").read_bytes() == (prepared.work / "index.jsonl").read_bytes()
    shard(ShardConfig(work, 1, tmp_path / "shards", tmp_path / "manifests", TINY_SHARD_SIZE))
    assert _files(tmp_path / "shards") == _files(prepared.shards)
    assert _files(tmp_path / "manifests") == _files(prepared.manifests)


def test_dali_reads_shard_on_cpu(prepared) -> None:
    from nvidia.dali import fn, pipeline_def, types

    recs = [r for r in ondisk.read_manifest(prepared.test_manifest)]
    first = recs[0].shard
    want = [r for r in recs if r.shard == first]
    tar = prepared.shards / first

    @pipeline_def(batch_size=len(want), num_threads=1, device_id=None)
    def pipe():
        video, meta, cls = fn.readers.webdataset(
            paths=[str(tar)],
            index_paths=[str(tar.with_suffix(".idx"))],
            ext=["webm", "meta.i32", "cls"],
            dtypes=[types.UINT8, types.INT32, types.UINT8],
            random_shuffle=False,
        )
        return video, meta, cls, fn.decoders.video(video, device="cpu")

    p = pipe()
    p.build()
    video, meta, cls, frames = p.run()
    for i, r in enumerate(want):
        data = np.array(video[i]).tobytes()
        assert hashlib.sha256(data).hexdigest() == r.sha256
        assert np.array(meta[i]).tolist() == [r.label, r.n_frames, 128, 170]
        assert np.array(cls[i]).tobytes() == str(r.label).encode()
        assert np.array(frames[i]).shape == (r.n_frames, 128, 170, 3)  # DALI decodes them all


def test_webdataset_library_reads_shard(prepared) -> None:
    import webdataset as wds

    recs = {r.key: r for r in ondisk.read_manifest(prepared.train_manifest)}
    urls = [str(prepared.shards / s) for s in dict.fromkeys(r.shard for r in recs.values())]
    seen = 0
    for sample in wds.WebDataset(urls, shardshuffle=False).decode():
        r = recs[sample["__key__"]]
        assert sample["cls"] == r.label and isinstance(sample["cls"], int)
        assert sample["json"]["n_frames"] == r.n_frames and sample["json"]["class"] == r.cls
        assert ondisk.unpack_meta(sample["meta.i32"])["n_frames"] == r.n_frames
        assert hashlib.sha256(sample["webm"]).hexdigest() == r.sha256
        seen += 1
    assert seen == len(recs)


def test_verify_passes_then_catches_flipped_byte(prepared, tmp_path: Path) -> None:
    assert verify(prepared.manifests, 1) == []
    shards, manifests = tmp_path / "shards", tmp_path / "manifests"
    shutil.copytree(prepared.shards, shards)
    shutil.copytree(prepared.manifests, manifests)
    r = ondisk.read_manifest(manifests / "split1_train.jsonl")[5]
    with open(shards / r.shard, "r+b") as f:
        f.seek(r.offset + r.size // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x01]))
    problems = verify(manifests, 1)
    assert problems == [f"{r.shard}: {r.key}: video sha256 mismatch"]


def test_split_without_test_videos_is_an_error(work_dir: Path, tmp_path: Path) -> None:
    index = [json.loads(x) for x in (work_dir / "index.jsonl").open()]
    w = tmp_path / "w"
    w.mkdir()
    shutil.copy(work_dir / ondisk.WORK_CONFIG, w)
    keep = [x for x in index if 3 not in x["test_in"]]
    (w / "index.jsonl").write_text("".join(json.dumps(x) + "\n" for x in keep))
    with pytest.raises(ValueError, match="split 3 has no test videos"):
        shard(ShardConfig(w, 3, tmp_path / "s", tmp_path / "m"))


def test_bad_index_line_names_file_and_line(work_dir: Path, tmp_path: Path) -> None:
    w = tmp_path / "w"
    w.mkdir()
    shutil.copy(work_dir / ondisk.WORK_CONFIG, w)
    lines = (work_dir / ondisk.WORK_INDEX).read_text().splitlines()
    lines[2] = lines[2].replace('"n_frames"', '"frames"')
    (w / ondisk.WORK_INDEX).write_text("\n".join(lines) + "\n")
    with pytest.raises(ondisk.FormatError, match=r"index.jsonl:3: missing field\(s\) n_frames"):
        shard(ShardConfig(w, 1, tmp_path / "s", tmp_path / "m"))


def test_verify_reports_missing_member_and_stale_index(prepared, tmp_path: Path) -> None:
    import tarfile

    shards, manifests = tmp_path / "shards", tmp_path / "manifests"
    shutil.copytree(prepared.shards, shards)
    shutil.copytree(prepared.manifests, manifests)
    rec = ondisk.read_manifest(manifests / "split1_test.jsonl")[0]
    with (
        tarfile.open(prepared.shards / rec.shard) as src,
        tarfile.open(shards / rec.shard, "w", format=tarfile.USTAR_FORMAT) as dst,
    ):  # rewrite the shard without the first sample's meta.i32
        for m in src.getmembers():
            if m.name != f"{rec.key}.meta.i32":
                dst.addfile(m, src.extractfile(m))
    problems = verify(manifests, 1)
    assert f"{rec.shard}: {rec.key}: meta.i32 is None, expected" in "\n".join(problems)
    assert any(p.startswith(f"{rec.shard}: DALI index") for p in problems)


def _work_copy(work_dir: Path, w: Path, keep=lambda rec: True) -> None:
    """A work directory sharing work_dir's videos (symlinked), with index lines chosen by keep."""
    w.mkdir()
    shutil.copy(work_dir / ondisk.WORK_CONFIG, w)
    (w / ondisk.WORK_VIDEOS).symlink_to(work_dir / ondisk.WORK_VIDEOS)
    index = [json.loads(x) for x in (work_dir / ondisk.WORK_INDEX).open()]
    (w / ondisk.WORK_INDEX).write_text("".join(json.dumps(x) + "\n" for x in index if keep(x)))


def test_interrupted_extract_rerun_is_refused_by_shard(
    work_dir: Path, synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import prep.extract

    w = tmp_path / "w"
    _work_copy(work_dir, w, keep=lambda r: r["class"] != "PushLeft")  # an earlier, smaller run

    def interrupted(tasks, jobs):
        raise KeyboardInterrupt
        yield

    monkeypatch.setattr(prep.extract, "_run", interrupted)
    with pytest.raises(KeyboardInterrupt, match="run the same command again to resume"):
        extract(ExtractConfig(synth_root / "UCF-101", synth_root / "ucfTrainTestlist", w))
    with pytest.raises(
        ondisk.FormatError, match="the last `ucf3d extract` into it did not complete"
    ):
        shard(ShardConfig(w, 1, tmp_path / "s", tmp_path / "m"))


def test_unprepared_videos_and_empty_classes_are_reported(
    work_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    w = tmp_path / "w"
    _work_copy(work_dir, w, keep=lambda r: not (r["class"] == "PushLeft" and 1 in r["test_in"]))
    bad = {"key": "v_MoveLeft_g99_c01", "class": "MoveLeft", "path": "x", "reason": "zero bytes"}
    (w / ondisk.WORK_ERRORS).write_text(json.dumps(bad) + "\n")
    s = shard(ShardConfig(w, 1, tmp_path / "s", tmp_path / "m", TINY_SHARD_SIZE))
    assert s["subsets"]["test"]["per_class"]["PushLeft"] == 0
    assert len(s["warnings"]) == 2
    assert "1 listed video(s) could not be prepared" in caplog.text
    assert "v_MoveLeft_g99_c01: zero bytes" in caplog.text
    assert "split 1: 1 class(es) have no test videos: PushLeft" in caplog.text
