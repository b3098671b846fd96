"""Export + predict on a raw video give the same logits as the eval model on the same clips."""

from __future__ import annotations

import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import paddle
import pytest
from click.testing import CliRunner

import cli
from train import checkpoint as ck
from train.config import TrainConfig
from train.data import ArrayClips, random_clips
from train.export import export_checkpoint
from train.predict import Predictor, predict_video
from train.preprocess import video_clips
from train.run import fit

CLASSES = ["Archery", "Bowling", "Crawling"]


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40-frame 320x240 MPEG-4 AVI, like UCF-101's originals: 2 full windows + 8 frames."""
    path = tmp_path_factory.mktemp("vid") / "v_Test_g01_c01.avi"
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-y", "-loglevel", "error", "-f", "lavfi",
           "-i", "testsrc2=size=320x240:rate=25", "-frames:v", "40", "-c:v", "mpeg4", "-q:v", "3",
           str(path)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    x, y = random_clips(6, 3, size=48, seed=4)
    data = ArrayClips(x, y, CLASSES, batch_size=3)
    run = tmp_path_factory.mktemp("run")
    fit(TrainConfig(model="tiny", size=48, batch_size=3, epochs=1, run_dir=run), train_data=data)
    return run / ck.LAST


def test_preprocess_layout_and_normalisation(video: Path) -> None:
    clips = video_clips(video, size=112)
    assert clips.shape == (2, 3, 16, 112, 112) and clips.dtype == np.float32
    assert -120 < clips.min() and clips.max() < 160  # 0-255 minus a ~110 mean, std 1


def test_preprocess_any_container_and_orientation(tmp_path: Path) -> None:
    path = tmp_path / "portrait.mp4"  # H.264 in MP4, 30 fps, taller than wide
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-y", "-loglevel", "error", "-f", "lavfi",
           "-i", "testsrc2=size=180x240:rate=30", "-frames:v", "45", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", str(path)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    clips = video_clips(path, size=112)  # 45 frames at 30 fps -> 38 at 25 fps -> 2 windows
    assert clips.shape == (2, 3, 16, 112, 112)


def test_export_and_predict_match_eval_logits(ckpt: Path, video: Path, tmp_path: Path) -> None:
    out = export_checkpoint(ckpt, tmp_path / "export")
    clips = video_clips(video, size=48)  # (2, 3, 16, 48, 48)
    model, _ = ck.model_from_checkpoint(ckpt)
    with paddle.no_grad():
        eval_logits = model(paddle.to_tensor(clips)).numpy()
    exported = Predictor(out).logits(clips, batch_size=1)  # dynamic batch: 1 then 1
    np.testing.assert_allclose(exported, eval_logits, rtol=1e-4, atol=1e-4)
    r = predict_video(video, out, topk=5)
    np.testing.assert_allclose(r["logits"], eval_logits, rtol=1e-4, atol=1e-4)
    assert r["windows"] == 2 and len(r["top"]) == 3
    assert [c for c, _ in r["top"]] != [] and sum(p for _, p in r["top"]) == pytest.approx(1.0)


def test_cli_export_and_predict(ckpt: Path, video: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(cli.main, ["export", "--ckpt", str(ckpt), "--out", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli.main, ["predict", str(video), "--model", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert lines[0].endswith("2 windows") and lines[1].startswith("1. ")
    assert {ln.split()[1] for ln in lines[1:]} == set(CLASSES)


def test_cli_predict_errors(video: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(cli.main, ["predict", str(video), "--model", str(tmp_path)])
    assert res.exit_code == 1 and "meta.json: not found" in res.output
    res = runner.invoke(cli.main, ["export", "--ckpt", str(tmp_path / "x.pdckpt"), "--out", "o"])
    assert res.exit_code == 1 and "x.pdckpt: checkpoint not found" in res.output
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="bad.avi"):
        video_clips(bad)


def test_predict_rejects_what_extract_rejects(video: Path, tmp_path: Path) -> None:
    """A still image, a 5-frame clip, a truncated and a bit-flipped AVI: extract's reasons."""
    import json

    import ondisk
    from prep.extract import ExtractConfig, extract

    ff = imageio_ffmpeg.get_ffmpeg_exe()
    cls = tmp_path / "UCF-101" / "Archery"
    cls.mkdir(parents=True)
    for g, frames in ((1, 40), (2, 40), (3, 5)):
        subprocess.run([ff, "-nostdin", "-v", "error", "-f", "lavfi", "-i",
                        "testsrc2=size=320x240:rate=25", "-frames:v", str(frames), "-c:v", "mpeg4",
                        str(cls / f"v_Archery_g0{g}_c01.avi")], check=True)  # fmt: skip
    subprocess.run([ff, "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240",
                    "-frames:v", "1", str(cls / "v_Archery_g04_c01.png")], check=True)  # fmt: skip
    data = bytearray(video.read_bytes())
    (cls / "v_Archery_g05_c01.avi").write_bytes(bytes(data[: len(data) // 2]))
    for i in range(len(data) // 3, len(data) // 3 + 4000, 50):
        data[i] ^= 0xFF
    (cls / "v_Archery_g06_c01.avi").write_bytes(bytes(data))
    bad = {3: ".avi", 4: ".png", 5: ".avi", 6: ".avi"}
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 Archery\n")
    (lists / "trainlist01.txt").write_text(
        "Archery/v_Archery_g01_c01.avi 1\n"
        + "".join(f"Archery/v_Archery_g0{g}_c01{ext} 1\n" for g, ext in bad.items())
    )
    (lists / "testlist01.txt").write_text("Archery/v_Archery_g02_c01.avi\n")
    extract(ExtractConfig(tmp_path / "UCF-101", lists, tmp_path / "w", jobs=1))
    errors = (tmp_path / "w" / ondisk.WORK_ERRORS).read_text().splitlines()
    reasons = {json.loads(x)["key"]: json.loads(x)["reason"] for x in errors}
    assert len(reasons) == 4
    for g, ext in bad.items():
        path = cls / f"v_Archery_g0{g}_c01{ext}"
        with pytest.raises(ValueError) as e:
            video_clips(path)
        ours, theirs = str(e.value).removeprefix(f"{path}: "), reasons[path.stem]
        kind = theirs.split(":")[0]
        assert kind in ("too short", "truncated", "undecodable") and ours.startswith(kind + ":")
        if kind != "undecodable":  # ffmpeg's own lines differ between the two runs
            assert ours == theirs.replace("declares ~", "declares ")


def test_cli_predict_names_broken_model_files(ckpt: Path, video: Path, tmp_path: Path) -> None:
    import json
    import shutil

    good = export_checkpoint(ckpt, tmp_path / "good")
    x, y = random_clips(3, 3, size=48, seed=5)
    run = tmp_path / "other"
    cfg = TrainConfig(
        model="tiny", size=48, batch_size=3, epochs=1, run_dir=run, widths=(4, 8, 16, 32)
    )
    fit(cfg, train_data=ArrayClips(x, y, CLASSES, batch_size=3))
    other = export_checkpoint(run / ck.LAST, tmp_path / "otherexport")

    def broken(name: str, change) -> tuple[Path, str]:
        d = tmp_path / name
        shutil.copytree(good, d)
        return d, change(d)

    def truncate(d: Path) -> str:
        p = d / "model.pdiparams"
        p.write_bytes(p.read_bytes()[:1000])
        return "model.pdiparams: does not match meta.json"

    def garbage(d: Path) -> str:
        (d / "model.json").write_text("{ not a program")
        return "model.json: does not match meta.json"

    def swapped(d: Path) -> str:
        shutil.copy(other / "model.pdiparams", d)
        return "model.pdiparams: does not match meta.json"

    def unchecked(d: Path) -> str:  # an export from before the checksums: Paddle's error, named
        meta = json.loads((d / "meta.json").read_text())
        del meta["files"]
        (d / "meta.json").write_text(json.dumps(meta))
        truncate(d)
        return f"{d}: the exported model does not load or run"

    for name, change in (("t", truncate), ("g", garbage), ("s", swapped), ("u", unchecked)):
        d, message = broken(name, change)
        res = CliRunner().invoke(cli.main, ["predict", str(video), "--model", str(d)])
        assert res.exit_code == 1 and res.output.startswith("Error: "), (name, res.output)
        assert message in res.output and len(res.output.strip().splitlines()) == 1, res.output


def test_export_to_a_read_only_folder(ckpt: Path, readonly_dir: Path) -> None:
    res = CliRunner().invoke(cli.main, ["export", "--ckpt", str(ckpt), "--out", str(readonly_dir)])
    assert res.exit_code == 1
    assert res.output.startswith(f"Error: {readonly_dir}: cannot write there"), res.output
