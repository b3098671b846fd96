"""extract: exact records, independent frame counts, bad inputs, resume, interrupts, determinism."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import imageio_ffmpeg
import pytest

import ondisk
from prep.extract import ExtractConfig, extract
from prep.ffmpeg import DecodeError, count_frames
from prep.synth import write_clip
from prep.ucf import read_splits

REPO = Path(__file__).resolve().parents[1]


def _index(work: Path) -> list[dict]:
    return [json.loads(line) for line in (work / ondisk.WORK_INDEX).read_text().splitlines()]


def _decode_count(path: Path) -> tuple[int, list[int]]:
    """PyAV: decoded frames, and the decode-order indices of keyframe packets."""
    with av.open(str(path)) as c:
        keys = [i for i, p in enumerate(c.demux(video=0)) if p.size and p.is_keyframe]
    with av.open(str(path)) as c:
        pts = [f.pts for f in c.decode(video=0)]
    assert pts == sorted(pts)  # no reordering: decode order is display order
    return len(pts), keys


def test_records_exact(synth_root: Path, work_dir: Path) -> None:
    classes, entries = read_splits(synth_root / "ucfTrainTestlist")
    index = _index(work_dir)
    assert [r["key"] for r in index] == sorted(e.key for e in entries)
    assert (work_dir / ondisk.WORK_ERRORS).read_text() == ""
    for rec in index:
        entry = next(e for e in entries if e.key == rec["key"])
        assert rec["class"] == entry.cls == rec["path"].split("/")[1]
        assert rec["label"] == classes.index(entry.cls)
        video = work_dir / rec["path"]
        assert video.suffix == ".webm" and video.stat().st_size == rec["bytes"]
        assert hashlib.sha256(video.read_bytes()).hexdigest() == rec["sha256"]
        src = synth_root / "UCF-101" / entry.relpath
        assert rec["src_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
        assert (rec["width"], rec["height"], rec["fps"], rec["gop"]) == (170, 128, 25, 8)
        n, keys = _decode_count(video)
        assert rec["n_frames"] == n == count_frames(video)  # independent decodes agree exactly
        assert keys == list(range(0, n, 8))  # a keyframe every 8 frames, and only there
        with av.open(str(src)) as c:  # 25 fps in, 25 fps out: one output frame per source frame
            assert n == sum(1 for _ in c.decode(video=0))
    pushleft = [r for r in index if r["class"] == "PushLeft"]
    assert len(pushleft) == 22 and all(r["key"].startswith("v_Pushleft_") for r in pushleft)
    assert not list(work_dir.rglob("*.tmp"))


def test_second_run_skips_and_is_identical(work_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(work_dir, tmp_path / "w")
    before = (tmp_path / "w" / ondisk.WORK_INDEX).read_bytes()
    cfg = json.loads((work_dir / ondisk.WORK_CONFIG).read_text())
    res = extract(ExtractConfig(Path(cfg["videos"]), Path(cfg["splits"]), tmp_path / "w", jobs=2))
    assert (res.prepared, res.encoded, res.skipped, res.errors) == (66, 0, 66, 0)
    assert (tmp_path / "w" / ondisk.WORK_INDEX).read_bytes() == before


def _bad_world(synth_root: Path, root: Path) -> tuple[Path, Path]:
    """Two good videos and one of each kind of bad input, listed as split 1 of a 1-class UCF."""
    videos, lists = root / "UCF-101" / "MoveLeft", root / "lists"
    videos.mkdir(parents=True)
    lists.mkdir()
    good = synth_root / "UCF-101" / "MoveLeft"
    for g in (1, 2):
        shutil.copy(good / f"v_MoveLeft_g0{g}_c01.avi", videos)
    data = (good / "v_MoveLeft_g03_c01.avi").read_bytes()
    (videos / "v_MoveLeft_g04_c01.avi").write_bytes(b"")  # zero bytes
    (videos / "v_MoveLeft_g05_c01.avi").write_bytes(data[: len(data) // 2])  # truncated
    (videos / "v_MoveLeft_g06_c01.avi").write_bytes(os.urandom(50_000))  # undecodable
    write_clip(videos / "v_MoveLeft_g07_c01.avi", 0, 7, 1, n_frames=10)  # shorter than 16 frames
    names = [f"MoveLeft/v_MoveLeft_g0{g}_c01.avi" for g in range(1, 8)]  # g03: missing
    (lists / "classInd.txt").write_text("1 MoveLeft\n")
    (lists / "trainlist01.txt").write_text("".join(f"{n} 1\r\n" for n in names[:4]))
    (lists / "testlist01.txt").write_text("".join(f"{n}\r\n" for n in names[4:]))
    return root / "UCF-101", lists


EXPECTED_ERRORS = {
    "v_MoveLeft_g03_c01": "missing",
    "v_MoveLeft_g04_c01": "zero bytes",
    "v_MoveLeft_g05_c01": "truncated",
    "v_MoveLeft_g06_c01": "undecodable",
    "v_MoveLeft_g07_c01": "too short",
}


@pytest.fixture(scope="module")
def bad_world(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _bad_world(synth_root, tmp_path_factory.mktemp("bad"))


def test_bad_inputs_reported_rest_kept(bad_world: tuple[Path, Path], tmp_path: Path) -> None:
    videos, lists = bad_world
    res = extract(ExtractConfig(videos, lists, tmp_path / "w", jobs=2))
    assert (res.prepared, res.errors) == (2, 5)
    assert [r["key"] for r in _index(tmp_path / "w")] == [
        "v_MoveLeft_g01_c01",
        "v_MoveLeft_g02_c01",
    ]
    errors = [json.loads(x) for x in (tmp_path / "w" / ondisk.WORK_ERRORS).read_text().splitlines()]
    assert {e["key"]: e["reason"].split(":")[0] for e in errors} == EXPECTED_ERRORS
    summary = json.loads((tmp_path / "w" / "extract_summary.json").read_text())
    assert summary["errors"] == 5 and len(summary["error_list"]) == 5
    assert not list((tmp_path / "w").rglob("*.tmp"))
    assert sorted(p.stem for p in (tmp_path / "w").rglob("*.webm")) == [
        "v_MoveLeft_g01_c01",
        "v_MoveLeft_g02_c01",
    ]
    with pytest.raises(RuntimeError, match="--strict"):
        extract(ExtractConfig(videos, lists, tmp_path / "w", jobs=1, strict=True))


def test_count_frames_raises_decode_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.webm"
    bad.write_bytes(b"\x1a\x45\xdf\xa3 not really a webm")
    with pytest.raises(DecodeError) as e:
        count_frames(bad)
    assert e.value.path == bad and e.value.stderr_tail


def test_resume_after_interrupted_run(work_dir: Path, tmp_path: Path) -> None:
    """Leftovers of a killed run (.tmp, output without record, damaged output) are redone."""
    w = tmp_path / "w"
    shutil.copytree(work_dir, w)
    cfg = json.loads((work_dir / ondisk.WORK_CONFIG).read_text())
    vids = sorted((w / "videos").rglob("*.webm"))
    reference = {p.name: p.read_bytes() for p in vids[:3]}
    vids[0].rename(vids[0].with_name(vids[0].name + ".tmp"))  # killed while encoding
    vids[0].with_suffix(".json").unlink()
    with open(vids[0].with_name(vids[0].name + ".tmp"), "r+b") as f:
        f.truncate(100)
    vids[1].with_suffix(".json").unlink()  # killed between rename and record
    data = bytearray(vids[2].read_bytes())  # damaged after it was finished
    data[len(data) // 2] ^= 0xFF
    vids[2].write_bytes(bytes(data))
    (w / ondisk.WORK_INDEX).unlink()
    res = extract(ExtractConfig(Path(cfg["videos"]), Path(cfg["splits"]), w, jobs=2))
    assert (res.prepared, res.encoded, res.skipped) == (66, 3, 63)
    assert {p.name: p.read_bytes() for p in vids[:3]} == reference  # same bytes as before
    assert (w / ondisk.WORK_INDEX).read_bytes() == (work_dir / ondisk.WORK_INDEX).read_bytes()
    assert not list(w.rglob("*.tmp"))


def test_ctrl_c_leaves_nothing_finished_looking(synth_root: Path, tmp_path: Path) -> None:
    w = tmp_path / "w"
    cmd = [
        sys.executable,
        str(REPO / "cli.py"),
        "extract",
        "--videos",
        str(synth_root / "UCF-101"),
        "--splits",
        str(synth_root / "ucfTrainTestlist"),
        "--out",
        str(w),
        "--jobs",
        "2",
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(w.rglob("*.json"))) < 6:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130  # 128 + SIGINT, the shell's convention for Ctrl-C
    assert not (w / ondisk.WORK_INDEX).exists()  # the index is written by completed runs only
    # the record, written last, is what marks a video finished (prep.extract): a video renamed
    # into place just before the signal, whose record was not yet written, is unfinished and is
    # encoded again by the run below (as in the test above)
    finished = [v for v in w.rglob("*.webm") if v.with_suffix(".json").exists()]
    assert 0 < len(finished) < 66
    for video in finished:  # every video that looks finished checks out against its record
        rec = json.loads(video.with_suffix(".json").read_text())["record"]
        assert hashlib.sha256(video.read_bytes()).hexdigest() == rec["sha256"]
    res = extract(ExtractConfig(synth_root / "UCF-101", synth_root / "ucfTrainTestlist", w, jobs=2))
    assert res.prepared == 66 and res.skipped >= len(finished)
    assert not list(w.rglob("*.tmp"))


def test_h264_option(bad_world: tuple[Path, Path], tmp_path: Path) -> None:
    videos, lists = bad_world
    res = extract(ExtractConfig(videos, lists, tmp_path / "w", codec="h264", jobs=1))
    assert res.prepared == 2
    for rec in _index(tmp_path / "w"):
        video = tmp_path / "w" / rec["path"]
        assert video.suffix == ".mp4" and rec["codec"] == "h264"
        n, keys = _decode_count(video)
        assert rec["n_frames"] == n == count_frames(video)
        assert keys == list(range(0, n, 8))


def test_second_run_on_a_locked_work_dir_is_refused(bad_world, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from cli import main
    from prep.files import locked_dir

    videos, lists = bad_world
    w = tmp_path / "w"
    args = ["extract", "--videos", str(videos), "--splits", str(lists), "--out", str(w), "-j", "1"]
    with locked_dir(w, "ucf3d extract"):  # a first run, still going (the kernel lock is per open)
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 1 and res.output.startswith(
            f"Error: {w}: in use by `ucf3d extract`"
        )
        assert f"(pid {os.getpid()} on " in res.output
        assert not (w / ondisk.WORK_CONFIG).exists()  # nothing touched
    assert CliRunner().invoke(main, args).exit_code == 0  # free again once the first run ends


def _small_world(synth_root: Path, root: Path, extra: dict[str, bytes | None]) -> tuple[Path, Path]:
    """MoveLeft g01 (train) and g02 (test) from the synthetic set, plus `extra` videos for train
    (name -> bytes, or None to leave it missing)."""
    videos, lists = root / "UCF-101", root / "lists"
    (videos / "MoveLeft").mkdir(parents=True)
    lists.mkdir()
    for g in (1, 2):
        shutil.copy(synth_root / "UCF-101" / "MoveLeft" / f"v_MoveLeft_g0{g}_c01.avi",
                    videos / "MoveLeft")  # fmt: skip
    for name, data in extra.items():
        if data is not None:
            (videos / "MoveLeft" / name).write_bytes(data)
    train = ["v_MoveLeft_g01_c01.avi", *extra]
    (lists / "classInd.txt").write_text("1 MoveLeft\n")
    (lists / "trainlist01.txt").write_text("".join(f"MoveLeft/{n} 1\n" for n in train))
    (lists / "testlist01.txt").write_text("MoveLeft/v_MoveLeft_g02_c01.avi\n")
    return videos, lists


def test_audio_only_file_is_no_video_stream(synth_root: Path, tmp_path: Path) -> None:
    audio = tmp_path / "a.avi"
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-f", "lavfi", "-i",
           "sine=frequency=440:duration=1", "-c:a", "pcm_s16le", str(audio)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    extra = {"v_MoveLeft_g03_c01.avi": audio.read_bytes()}
    videos, lists = _small_world(synth_root, tmp_path / "world", extra)
    res = extract(ExtractConfig(videos, lists, tmp_path / "w", jobs=1))
    assert (res.prepared, res.errors) == (2, 1)
    err = json.loads((tmp_path / "w" / ondisk.WORK_ERRORS).read_text())
    assert err["reason"] == "no video stream: the file holds no video, only audio"


def test_broken_ffmpeg_fails_up_front(synth_root: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from cli import main

    videos, lists = _small_world(synth_root, tmp_path / "world", {})
    w = tmp_path / "w"
    args = ["extract", "--videos", str(videos), "--splits", str(lists), "--out", str(w)]
    res = CliRunner().invoke(main, [*args, "--ffmpeg", str(tmp_path / "no-ffmpeg")])
    assert res.exit_code == 1
    assert res.output.startswith(f"Error: {tmp_path / 'no-ffmpeg'}: cannot run ffmpeg")
    res = CliRunner().invoke(main, args, env={"UCF3D_FFMPEG": "/bin/false"})
    assert res.exit_code == 1 and res.output.startswith("Error: /bin/false: not a working ffmpeg")
    assert not w.exists()  # refused before any work
    res = CliRunner().invoke(main, ["synth", str(tmp_path / "s"), "--ffmpeg", "/bin/true"])
    assert res.exit_code == 1 and "Error: /bin/true: not a working ffmpeg" in res.output


def test_decode_error_crosses_a_process_pool(synth_root: Path, tmp_path: Path) -> None:
    import pickle

    from click.testing import CliRunner

    from cli import main

    e = pickle.loads(pickle.dumps(DecodeError(Path("x.avi"), "line 1\nline 2")))
    assert (e.path, e.stderr_tail, str(e)) == (Path("x.avi"), "line 1\nline 2",
                                               "x.avi: ffmpeg failed: line 2")  # fmt: skip
    extra = {"v_MoveLeft_g06_c01.avi": os.urandom(50_000)}  # one broken video
    videos, lists = _small_world(synth_root, tmp_path / "world", extra)
    args = ["bench", "prep", "--scratch", str(tmp_path / "scratch"), "--videos", str(videos),
            "--splits", str(lists), "--jobs", "2"]  # fmt: skip
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert (out["n_videos"], out["prepared"]) == (3, 2)
    assert out["jpeg"]["errors"] == 1 and out["ours"]["errors"] == 1
