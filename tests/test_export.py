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
from train.loop import fit
from train.predict import Predictor, predict_video
from train.preprocess import video_clips

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
