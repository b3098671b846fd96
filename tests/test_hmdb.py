"""HMDB-51: split files, safe keys, and a synthetic HMDB-51 with hostile names end to end.

The module's own tiny world: `ucf3d synth --dataset hmdb51` with 4 classes (labels in sorted
name order differ from synth's motion order) x 6 groups x 1 clip of ~1 s; group 6 is flagged 0 in
every split, groups 1-5 are tested in splits 1/2/3 or left out of one (prep.synth_hmdb), so each
split trains on 12 videos, tests 4 and leaves 4 (+ the 4 never used) out.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import ondisk
from cli import main
from ondisk import FormatError
from prep.extract import ExtractConfig, extract
from prep.hmdb import read_splits, video_key
from prep.shard import ShardConfig, shard
from prep.synth_hmdb import SPLITS, VIDEOS, class_name, flag
from prep.verify import verify

CLASSES, GROUPS = 4, 6
SAFE_KEY = re.compile(r"^[A-Za-z0-9_-]{1,59}$")


def _run(*args: object):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def hmdb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """synth -> extract -> shard (splits 1, 2, 3 into one shards/ and manifests/), via the CLI."""
    root = tmp_path_factory.mktemp("hmdb")
    _run("synth", root / "src", "--dataset", "hmdb51", "--classes", CLASSES, "--groups", GROUPS,
         "--seconds", 1.0)  # fmt: skip
    _run("extract", "--dataset", "hmdb51", "--videos", root / "src" / VIDEOS,
         "--splits", root / "src" / SPLITS, "--out", root / "work")  # fmt: skip
    for k in (1, 2, 3):
        _run("shard", "--work", root / "work", "--split", k, "--shards", root / "shards",
             "--manifests", root / "manifests", "--shard-size", "60000")  # fmt: skip
    return root


def _flags(splits: Path) -> dict[tuple[int, str], int]:
    """(split, "<class>/<video>.avi") -> flag, read straight from the split files."""
    out = {}
    for path in splits.iterdir():
        cls, k = re.fullmatch(r"(.+)_test_split(\d)\.txt", path.name).groups()
        for line in path.read_text(encoding="utf-8").splitlines():
            name, f = line.rsplit(None, 1)
            out[(int(k), f"{cls}/{name}")] = int(f)
    return out


# ---- keys and split files (no video) ----------------------------------------------------------


def test_video_key_is_safe_bounded_unique_and_stable() -> None:
    names = [
        "brush_hair/Dr._Jekyll_and_Mr._Hyde_brush_hair_f_cm_np1_ri_med_0.avi",
        "clap/#20_Rhythm_&_Blues_(Live)_clap_u_nm_np1_fr_goo_0.avi",
        "clap/#20_Rhythm_&_Blues_[Live]_clap_u_nm_np1_fr_goo_0.avi",  # same once sanitised
        "kiss/Ocean's_11_+_12,_a;b!_kiss_h_cm_np2_le_goo_3.avi",
        "run/Space Odyssey 2001_run_f_cm_np1_ba_med_0.avi",
        "run/Crème_brûlée_run_f_cm_np1_ba_med_0.avi",
        "run/" + "Very_" * 60 + "Long_run_f_cm_np1_ba_med_0.avi",
        "run/....avi",
    ]
    keys = [video_key(n) for n in names]
    assert all(SAFE_KEY.match(k) for k in keys), keys
    assert len(set(keys)) == len(keys)
    assert keys == [video_key(n) for n in names]  # deterministic
    assert keys[0].startswith("Dr_Jekyll_and_Mr_Hyde_brush_hair")
    assert keys[1].rsplit("-", 1)[0] == keys[2].rsplit("-", 1)[0]  # only the hash tells
    assert keys[7].startswith("video-")


def test_read_splits_labels_flags_and_unused(tmp_path: Path) -> None:
    from prep.synth_hmdb import split_files

    for name, text in split_files(CLASSES, GROUPS, 2).items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    classes, entries = read_splits(tmp_path)
    assert classes == sorted(class_name(i) for i in range(CLASSES))
    assert classes != [class_name(i) for i in range(CLASSES)]  # sorted, not synth's order
    assert len(entries) == CLASSES * (GROUPS - 1) * 2  # group 6: flag 0 everywhere, left out
    flags = _flags(tmp_path)
    for e in entries:
        assert e.label == classes.index(e.cls) and e.relpath.startswith(e.cls + "/")
        for k in (1, 2, 3):
            assert (k in e.train_in, k in e.test_in) == (flags[k, e.relpath] == 1,
                                                         flags[k, e.relpath] == 2)  # fmt: skip
    assert len({e.key for e in entries}) == len(entries)
    assert [e.key for e in entries] == sorted(e.key for e in entries)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"a_test_split1.txt": "x.avi 1\ny.avi 3\n"}, r"a_test_split1.txt:2: expected"),
        ({"a_test_split1.txt": "x.avi 1\nx.avi 2\n"}, r"a_test_split1.txt:2: x.avi is already"),
        ({"a_test_split1.txt": "d/x.avi 1\n"}, r"a_test_split1.txt:1: expected a file name"),
        ({"a_test_split1.txt": "x.avi\n"}, r"a_test_split1.txt:1: expected"),
        ({"a_test_split1.txt": "x.avi 1\n", "b_test_split2.txt": "y.avi 1\n"},
         r"b_test_split1.txt: not found"),
        ({"notes.txt": "x.avi 1\n"}, r"no <class>_test_split<N>.txt files"),
    ],
)  # fmt: skip
def test_read_splits_names_file_and_line(tmp_path: Path, files: dict, message: str) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(FormatError, match=message):
        read_splits(tmp_path)


def test_synth_flags_give_every_split_train_test_and_unused() -> None:
    for k in (1, 2, 3):
        roles = [flag(g, GROUPS, k) for g in range(1, GROUPS + 1)]
        assert roles[-1] == 0 and {0, 1, 2} <= set(roles)


# ---- the synthetic HMDB-51 end to end --------------------------------------------------------


def test_extract_shard_verify_every_video_once_labels_and_flags(hmdb: Path) -> None:
    flags = _flags(hmdb / "src" / SPLITS)
    classes = sorted(class_name(i) for i in range(CLASSES))
    work = hmdb / "work"
    assert (work / ondisk.WORK_CLASSES).read_text() == "".join(
        f"{i} {c}\n" for i, c in enumerate(classes, 1)
    )
    index = [json.loads(line) for line in (work / ondisk.WORK_INDEX).read_text().splitlines()]
    used = {rel for (_, rel), f in flags.items() if f}  # used by at least one split
    assert len({rel for _, rel in flags}) > len(used)  # and some that no split uses
    assert sorted(r["source"] for r in index) == sorted(used)  # never-used videos: not extracted
    # every extracted video is stored once, in one shard, under a safe key
    stored = []
    for tar in sorted((hmdb / "shards").glob("*.tar")):
        with tarfile.open(tar) as tf:
            stored += [m.name.split(".", 1)[0] for m in tf.getmembers() if m.name.endswith(".webm")]
    assert sorted(stored) == sorted(r["key"] for r in index)
    assert all(SAFE_KEY.match(k) for k in stored)
    for k in (1, 2, 3):
        assert verify(hmdb / "manifests", k) == []
        summary = ondisk.read_summary(hmdb / "manifests" / ondisk.summary_name(k))
        assert summary["classes"] == classes
        keys = []
        for subset, want in (("train", 1), ("test", 2)):
            recs = ondisk.read_manifest(hmdb / "manifests" / ondisk.manifest_name(k, subset))
            assert {r.source for r in recs} == {rel for (s, rel), f in flags.items()
                                                if s == k and f == want}  # fmt: skip
            for r in recs:
                assert r.cls == r.source.split("/")[0] and r.label == classes.index(r.cls)
                assert r.key == video_key(r.source)
            keys += [r.key for r in recs]
        assert len(set(keys)) == len(keys)  # unique within and across train and test
        left_out = {rel for (s, rel), f in flags.items() if s == k and f == 0}
        assert left_out and not {video_key(rel) for rel in left_out} & set(keys)  # in neither
    result = CliRunner().invoke(main, ["shard", "--split", "2", "--verify",
                                       "--manifests", str(hmdb / "manifests")])  # fmt: skip
    assert result.exit_code == 0 and "match their manifests" in result.output


def test_gpu_cache_names_and_file_lists_hold_the_hostile_names(hmdb: Path, tmp_path: Path) -> None:
    """Without a GPU: the staged cache files, their names and the NVDEC file-list lines."""
    pytest.importorskip("nvidia.dali")
    from loader import LoaderConfig
    from loader.backend import make_batches
    from loader.sampling import epoch_plan
    from loader.segment import file_lists
    from loader.source import load_dataset
    from loader.videocache import cache_name, stage_cache

    cfg = LoaderConfig(manifests=hmdb / "manifests", split=1, num_threads=1, batch_size=5,
                       gpu_batch=3, gpu_pipelines=2)  # fmt: skip
    ds = load_dataset(cfg)
    paths = stage_cache(ds, tmp_path / "cache")
    names = [p.name for p in paths]
    assert names == [cache_name(r.key, r.sha256, r.ext) for r in ds.records]
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[0-9a-f]{16}-[A-Za-z0-9_-]+\.webm", n) for n in names)
    plan = epoch_plan(cfg, ds.n_frames, ds.height, ds.width, epoch=0)
    batches = make_batches(ds, plan, cfg.batch_size, 0)
    chunks = [b.requests[s : s + 3] for b in batches for s in range(0, len(b), 3)]
    _, texts = file_lists(chunks, paths, 2, 3, cfg.clip_len)
    lines = [line.split(" ") for t in texts for line in t.splitlines()]
    assert all(len(f) == 4 for f in lines)  # path id start end: nothing split a name
    assert {f[0] for f in lines} == {str(p) for p in paths}


def test_train_and_eval_on_hmdb_manifests(hmdb: Path, tmp_path: Path) -> None:
    """CPU: a few training steps, then eval; predictions name every test video by key and file."""
    pytest.importorskip("nvidia.dali")
    from train import checkpoint as ck
    from train.config import TrainConfig
    from train.evaluation import evaluate_checkpoint
    from train.run import fit

    cfg = TrainConfig(
        model="tiny", manifests=hmdb / "manifests", shards=hmdb / "shards", split=1, size=32,
        batch_size=4, epochs=1, max_steps=2, max_val_steps=1, num_threads=1, log_every=1,
        run_dir=tmp_path / "run",
    )  # fmt: skip
    run = fit(cfg)
    assert json.loads((run / "config.json").read_text())["num_classes"] == CLASSES
    r = evaluate_checkpoint(run / ck.LAST, modes=("video",))
    test = ondisk.read_manifest(hmdb / "manifests" / ondisk.manifest_name(1, "test"))
    preds = json.loads(Path(r["files"]["video"]["predictions"]).read_text())["videos"]
    assert sorted(p["key"] for p in preds) == sorted(t.key for t in test)  # each video once
    by_key = {t.key: t for t in test}
    for p in preds:
        t = by_key[p["key"]]
        assert (p["source"], p["label"], p["class"]) == (t.source, t.label, t.cls)


def test_records_and_manifests_from_before_source_still_work(hmdb: Path, tmp_path: Path) -> None:
    """Format version 1 unchanged: `source` is optional; an old WORK record gets it on re-run."""
    line = (hmdb / "manifests" / ondisk.manifest_name(1, "test")).read_text().splitlines()[0]
    old = {k: v for k, v in json.loads(line).items() if k != "source"}
    (tmp_path / "m.jsonl").write_text(json.dumps(old) + "\n")
    assert ondisk.read_manifest(tmp_path / "m.jsonl")[0].source == ""
    work = tmp_path / "work"
    shutil.copytree(hmdb / "work", work)
    sidecar = next(work.glob("videos/*/*.json"))
    obj = json.loads(sidecar.read_text())
    source = obj["record"].pop("source")
    sidecar.write_text(json.dumps(obj))
    cfg = ExtractConfig(hmdb / "src" / VIDEOS, hmdb / "src" / SPLITS, work, dataset="hmdb51")
    assert extract(cfg).encoded == 0  # nothing re-encoded
    index = [json.loads(x) for x in (work / ondisk.WORK_INDEX).read_text().splitlines()]
    assert source in {r["source"] for r in index}
    assert (work / ondisk.WORK_INDEX).read_bytes() == (
        hmdb / "work" / ondisk.WORK_INDEX
    ).read_bytes()


def test_cli_wrong_split_folder_for_the_dataset(hmdb: Path, tmp_path: Path) -> None:
    """One `Error:` line naming the folder, exit 1, whichever way round the folders are mixed."""
    src = hmdb / "src"
    r = CliRunner().invoke(main, ["extract", "--videos", str(src / VIDEOS), "--splits",
                                  str(src / SPLITS), "--out", str(tmp_path / "w1")])  # fmt: skip
    assert r.exit_code == 1 and "Error: " in r.output and "--dataset hmdb51" in r.output
    (tmp_path / "ucf").mkdir()
    (tmp_path / "ucf" / "classInd.txt").write_text("1 MoveLeft\n")
    r = CliRunner().invoke(main, ["extract", "--dataset", "hmdb51", "--videos", str(src / VIDEOS),
                                  "--splits", str(tmp_path / "ucf"), "--out",
                                  str(tmp_path / "w2")])  # fmt: skip
    assert r.exit_code == 1 and f"Error: {tmp_path / 'ucf'}: no <class>_test_split" in r.output
    r = CliRunner().invoke(main, ["synth", str(tmp_path / "s"), "--dataset", "kinetics"])
    assert r.exit_code == 2


def test_a_name_in_another_encoding_still_names_its_file(tmp_path: Path) -> None:
    (tmp_path / "clap_test_split1.txt").write_bytes(b"caf\xe9_clap_0.avi 1 \nb.avi 2\n")
    _, entries = read_splits(tmp_path)
    e = next(e for e in entries if e.relpath.startswith("clap/caf"))
    assert os.fsencode(e.relpath) == b"clap/caf\xe9_clap_0.avi"  # the bytes on disk
    assert SAFE_KEY.match(e.key) and json.loads(json.dumps(e.relpath)) == e.relpath


def _all_records(hmdb: Path) -> list[ondisk.ManifestRecord]:
    man = hmdb / "manifests"
    return [r for s in ("train", "test") for r in ondisk.read_manifest(man / f"split1_{s}.jsonl")]


def test_webdataset_and_dali_group_samples_by_the_whole_key(hmdb: Path) -> None:
    """Both readers split `<key>.<component>` at the first dot: each sample comes back whole."""
    wds = pytest.importorskip("webdataset")
    pytest.importorskip("nvidia.dali")
    from nvidia.dali import fn, pipeline_def, types

    recs = {r.key: r for r in _all_records(hmdb)}
    urls = [str(hmdb / "shards" / s) for s in sorted({r.shard for r in recs.values()})]
    got = {}
    for sample in wds.WebDataset(urls, shardshuffle=False).decode():
        got[sample["__key__"]] = sample
        assert set(sample) >= {"cls", "json", "meta.i32", "webm"}
    assert set(got) == set(recs)
    for key, r in recs.items():
        assert got[key]["json"]["source"] == r.source and got[key]["cls"] == r.label
    tar = hmdb / "shards" / next(iter(recs.values())).shard
    want = [r for r in recs.values() if r.shard == tar.name]

    @pipeline_def(batch_size=len(want), num_threads=1, device_id=None)
    def pipe():  # noqa: ANN202 - DALI graph definition
        video, cls = fn.readers.webdataset(
            paths=[str(tar)], index_paths=[str(tar.with_suffix(".idx"))], ext=["webm", "cls"],
            dtypes=[types.UINT8, types.UINT8], random_shuffle=False,
        )  # fmt: skip
        return video, cls

    p = pipe()
    p.build()
    video, cls = p.run()
    shas = sorted(
        hashlib.sha256(np.array(video[i]).tobytes()).hexdigest() for i in range(len(want))
    )
    assert shas == sorted(r.sha256 for r in want)
    assert sorted(int(np.array(cls[i]).tobytes()) for i in range(len(want))) == sorted(
        r.label for r in want
    )


def test_fresh_extract_and_shard_are_byte_identical(hmdb: Path, tmp_path: Path) -> None:
    src = hmdb / "src"
    extract(ExtractConfig(src / VIDEOS, src / SPLITS, tmp_path / "work", jobs=2, dataset="hmdb51"))
    assert (tmp_path / "work" / ondisk.WORK_INDEX).read_bytes() == (
        hmdb / "work" / ondisk.WORK_INDEX
    ).read_bytes()
    shard(ShardConfig(tmp_path / "work", 1, tmp_path / "shards", tmp_path / "m", 60_000))
    for p in sorted((tmp_path / "shards").iterdir()):
        assert p.read_bytes() == (hmdb / "shards" / p.name).read_bytes(), p.name
    for name in ("split1_train.jsonl", "split1_test.jsonl"):
        assert (tmp_path / "m" / name).read_bytes() == (hmdb / "manifests" / name).read_bytes()


def test_demo_record_from_before_the_dataset_option_is_ucf101(tmp_path: Path) -> None:
    from demo import DEMO_JSON, DemoConfig, _check_out

    cfg = DemoConfig(out=tmp_path)
    old = {k: v for k, v in cfg.to_dict().items() if k != "dataset"}
    (tmp_path / DEMO_JSON).write_text(json.dumps({"config": old}))
    _check_out(cfg)  # the same demo: resumed, not refused
    with pytest.raises(ValueError, match="other settings.*dataset"):
        _check_out(DemoConfig(out=tmp_path, dataset="hmdb51"))
    assert "synthetic HMDB-51" in DemoConfig(dataset="hmdb51").settings()[0]
