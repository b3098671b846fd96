"""CLI prep commands: exit codes and messages (click's CliRunner, plus one real subprocess)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

import ondisk
from cli import main

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_help_as_script_and_console_entry() -> None:
    out = subprocess.run(
        [sys.executable, "cli.py", "--help"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    for cmd in ("synth", "extract", "shard"):
        assert cmd in out
    assert "prep" in _run("bench", "--help").output


def test_synth_bad_option_is_usage_error(tmp_path: Path) -> None:
    res = _run("synth", tmp_path / "x", "--classes", "0")
    assert res.exit_code == 2 and "--classes" in res.output


def test_synth_small(tmp_path: Path) -> None:
    res = _run(
        "synth",
        tmp_path / "s",
        "--classes",
        "2",
        "--groups",
        "1",
        "--seconds",
        "0.8",
        "--jobs",
        "1",
    )
    assert res.exit_code == 0, res.output
    assert "synth: 2 videos of 2 classes" in res.output
    assert len(list((tmp_path / "s" / "UCF-101").rglob("*.avi"))) == 2


def test_extract_missing_dir_and_nothing_prepared(tmp_path: Path) -> None:
    res = _run(
        "extract", "--videos", tmp_path / "nope", "--splits", tmp_path, "--out", tmp_path / "w"
    )
    assert res.exit_code == 2 and "does not exist" in res.output
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 MoveLeft\n")
    (lists / "trainlist01.txt").write_text("MoveLeft/v_MoveLeft_g01_c01.avi 1\n")
    (lists / "testlist01.txt").write_text("")
    res = _run("extract", "--videos", tmp_path, "--splits", lists, "--out", tmp_path / "w")
    assert res.exit_code == 1
    assert res.output.startswith("Error: ") and "no video could be prepared" in res.output
    errors = (tmp_path / "w" / ondisk.WORK_ERRORS).read_text()
    assert "v_MoveLeft_g01_c01" in errors and "missing" in errors


def test_extract_bad_list_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "classInd.txt").write_text("1 MoveLeft\n")
    (tmp_path / "trainlist01.txt").write_text("MoveLeft/v_MoveLeft_g01_c01.avi 1\nJump/v_J.avi 2\n")
    (tmp_path / "testlist01.txt").write_text("")
    res = _run("extract", "--videos", tmp_path, "--splits", tmp_path, "--out", tmp_path / "w")
    assert res.exit_code == 1 and "trainlist01.txt:2: class folder 'Jump'" in res.output


def test_extract_strict_exit(synth_root: Path, tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    shutil.copytree(synth_root / "ucfTrainTestlist", lists)
    with open(lists / "testlist01.txt", "a") as f:
        f.write("MoveLeft/v_MoveLeft_g99_c01.avi\n")
    videos = tmp_path / "videos"  # a small copy: only group 1 of each class (+ the missing one)
    for p in (synth_root / "UCF-101").rglob("*_g01_c01.avi"):
        (videos / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, videos / p.parent.name)
    for name in lists.glob("*list0*.txt"):
        keep = [x for x in name.read_text().splitlines() if "_g01_" in x or "_g99_" in x]
        name.write_text("".join(x + "\n" for x in keep))
    args = ["extract", "--videos", videos, "--splits", lists, "--out", tmp_path / "w", "-j", "1"]
    res = _run(*args)
    assert res.exit_code == 0, res.output
    assert "3 videos prepared (3 encoded, 0 already done), 1 errors" in res.output
    res = _run(*args, "--strict")
    assert res.exit_code == 1 and "--strict" in res.output and "v_MoveLeft_g99_c01" in res.output


def test_shard_and_verify_exit_codes(prepared, tmp_path: Path) -> None:
    res = _run("shard", "--split", "1")
    assert res.exit_code == 2 and "--work is required" in res.output
    res = _run(
        "shard",
        "--work",
        prepared.work,
        "--split",
        "2",
        "--shards",
        tmp_path / "s",
        "--manifests",
        tmp_path / "m",
        "--shard-size",
        "200kB",
    )
    assert res.exit_code == 0, res.output
    n = len(list((tmp_path / "s").glob("*.tar")))
    assert n > 4 and f"split 2: 45 train / 21 test videos in {n} shards ({n} written)" in res.output
    res = _run("shard", "--split", "2", "--manifests", tmp_path / "m", "--verify")
    assert res.exit_code == 0 and "match their manifests" in res.output
    rec = ondisk.read_manifest(tmp_path / "m" / "split2_test.jsonl")[0]
    with open(tmp_path / "s" / rec.shard, "r+b") as f:
        f.seek(rec.offset + 100)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x80]))
    res = _run("shard", "--split", "2", "--manifests", tmp_path / "m", "--verify")
    assert res.exit_code == 1
    assert f"{rec.shard}: {rec.key}: video sha256 mismatch" in res.output
    assert "Error: split 2: 1 mismatch(es)" in res.output
    res = _run("shard", "--split", "3", "--manifests", tmp_path / "m", "--verify")
    assert res.exit_code == 1 and "split3_summary.json: split summary not found" in res.output
    res = _run("shard", "--work", tmp_path, "--split", "1", "--shard-size", "lots")
    assert res.exit_code == 2 and "is not a size" in res.output
    s = json.loads((tmp_path / "m" / "split2_summary.json").read_text())
    assert s["shards_dir"] == "../s"


def test_bench_prep_prints_one_json_line(tmp_path: Path) -> None:
    res = _run(
        "bench",
        "prep",
        "--scratch",
        tmp_path,
        "--classes",
        "1",
        "--groups",
        "8",
        "--seconds",
        "0.8",
        "--jobs",
        "2",
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert out["n_videos"] == out["prepared"] == 8 and out["jpeg"]["frames"] > 8 * 16
    assert out["disk_ratio"] > 1 and out["ours"]["cpu_seconds"] > 0


def _lists(d: Path, **files: str) -> Path:
    d.mkdir()
    (d / "classInd.txt").write_text("1 MoveLeft\n")
    for name, text in files.items():
        (d / f"{name}.txt").write_text(text)
    return d


A, B = "MoveLeft/v_MoveLeft_g01_c01.avi", "MoveLeft/v_MoveLeft_g02_c01.avi"


def test_split_lists_missing_empty_or_listing_twice(tmp_path: Path, caplog) -> None:
    from prep.ucf import read_splits

    def extract(lists: Path):
        return _run("extract", "--videos", tmp_path, "--splits", lists, "--out", tmp_path / "w")

    both = {f"{r}0{k}": f"{A} 1\n" if r == "trainlist" else f"{B}\n"
            for k in (1, 2, 3) for r in ("trainlist", "testlist")}  # fmt: skip
    gap = _lists(tmp_path / "gap", **{k: v for k, v in both.items() if k != "trainlist02"})
    res = extract(gap)
    assert res.exit_code == 1
    assert f"Error: {gap / 'trainlist02.txt'}: not found, but testlist02.txt is" in res.output
    empty = _lists(tmp_path / "empty", **{**both, "testlist01": ""})
    read_splits(empty)
    assert f"{empty / 'testlist01.txt'}: lists no videos" in caplog.text
    only1 = _lists(tmp_path / "only1", trainlist01=f"{A} 1\n", testlist01=f"{B}\n")
    read_splits(only1)
    assert "only split(s) 1 listed (no trainlist02/3.txt)" in caplog.text
    twice = _lists(tmp_path / "twice", trainlist01=f"{A} 1\n{B} 1\n{A} 1\n", testlist01=f"{B}\n")
    res = extract(twice)
    assert (
        res.exit_code == 1
        and (
            f"{twice / 'trainlist01.txt'}:3: {A} is already listed in split 1, at trainlist01.txt:1"
        )
        in res.output
    )
    (twice / "trainlist01.txt").write_text(f"{A} 1\n{B} 1\n")
    res = extract(twice)
    assert (
        res.exit_code == 1
        and (
            f"{twice / 'testlist01.txt'}:1: {B} is already listed in split 1, at trainlist01.txt:2"
        )
        in res.output
    )


def test_version_and_option_help() -> None:
    assert _run("--version").output.strip() == "ucf3d 0.1.0"
    helps = {cmd: _run(cmd, "--help").output for cmd in ("export", "eval", "train")}
    flat = " ".join(helps["export"].split())
    assert "A checkpoint written by `ucf3d train`" in flat and "what predict reads" in flat
    for option in ("--batch-size", "--decode", "--threads"):
        line = next(ln for ln in helps["eval"].splitlines() if ln.strip().startswith(option))
        assert len(line.split()) > 3, line  # option, metavar, then its help
    for option in ("--width", "--max-steps", "--max-val-steps", "--shards", "--depth"):
        block = helps["train"].split(option, 1)[1].split("\n  --", 1)[0]
        assert "default" in block.lower(), (option, block)
