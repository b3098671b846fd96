"""The training stack on the real DALI loader and the shared tiny synthetic UCF-101 (conftest)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nvidia.dali")

from train import checkpoint as ck  # noqa: E402
from train.config import TrainConfig  # noqa: E402
from train.evaluation import evaluate_checkpoint  # noqa: E402
from train.preprocess import video_clips  # noqa: E402
from train.run import fit  # noqa: E402


def test_fit_and_evaluate_from_the_dali_loader(prepared, tmp_path: Path) -> None:
    cfg = TrainConfig(
        model="tiny", manifests=prepared.manifests, shards=prepared.shards, split=prepared.split,
        size=32, batch_size=8, epochs=1, max_steps=2, num_threads=2, log_every=1,
        run_dir=tmp_path / "run",
    )  # fmt: skip
    run = fit(cfg)
    (record,) = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert record["train_clips"] == 16 and 0 <= record["val_acc"] <= 1
    assert json.loads((run / "config.json").read_text())["num_classes"] == 3
    r = evaluate_checkpoint(run / ck.LAST, modes=("clip", "video"))
    n_test = len(prepared.test_manifest.read_text().splitlines())
    assert r["modes"]["clip"]["videos"] == r["modes"]["video"]["videos"] == n_test
    assert r["modes"]["clip"]["clips"] == 3 * n_test
    assert r["modes"]["video"]["clips"] >= n_test
    preds = json.loads(Path(r["files"]["video"]["predictions"]).read_text())["videos"]
    assert len(preds) == n_test  # the last video too
    n = [json.loads(ln)["n_frames"] for ln in prepared.test_manifest.read_text().splitlines()]
    assert r["windows"] == "full" and r["modes"]["video"]["clips"] == sum(f // 16 for f in n)
    h = evaluate_checkpoint(run / ck.LAST, modes=("video",), windows="hara", out_dir=run / "h")
    assert h["modes"]["video"]["videos"] == n_test
    assert h["modes"]["video"]["clips"] == sum(-(-(f - 1) // 16) for f in n)  # ceil((n-1)/16)
    assert json.loads((run / "h" / "eval.json").read_text())["windows"] == "hara"


def test_predict_preprocessing_matches_the_loader(prepared) -> None:
    """predict's ffmpeg chain on a prepared video gives the loader's video-mode clips."""
    from loader import ClipLoader, LoaderConfig

    size = 112
    cfg = LoaderConfig(manifests=prepared.manifests, shards=prepared.shards, subset="test",
                       mode="video", batch_size=64, size=size, num_threads=2)  # fmt: skip
    batch = next(iter(ClipLoader(cfg).epoch(0)))
    key = batch.keys[0]
    mine = np.array([i for i, k in enumerate(batch.keys) if k == key])
    from_loader = batch.clips.numpy()[mine]  # (n, 3, 16, S, S)
    record = json.loads(prepared.test_manifest.read_text().splitlines()[0])
    assert record["key"] == key
    video = next(prepared.work.glob(f"videos/*/{key}.{record['ext']}"))
    ours = video_clips(video, size=size)
    assert ours.shape == from_loader.shape
    diff = np.abs(ours - from_loader)
    assert diff.mean() < 0.5, diff.mean()  # 0-255 scale; 0.03 measured at 112, 0.4 at 32-64


def test_cli_train_resume_eval_export_predict(prepared, tmp_path: Path) -> None:
    from click.testing import CliRunner

    import cli

    run = tmp_path / "run"
    runner = CliRunner()
    args = ["train", "--model", "tiny", "--clip-size", "32", "--batch-size", "8", "--epochs", "1",
            "--max-steps", "2", "--max-val-steps", "1", "--threads", "2", "--start-align", "8",
            "--scales", "1,0.5", "--no-flip",
            "--manifests", str(prepared.manifests), "--shards", str(prepared.shards),
            "--run-dir", str(run)]  # fmt: skip
    res = runner.invoke(cli.main, args)
    assert res.exit_code == 0, res.output
    assert "trained tiny to epoch 1" in res.output
    saved = json.loads((run / "config.json").read_text())
    want = {"start_align": 8, "scales": [1.0, 0.5], "flip": False}
    assert saved["loader_options"] == want  # reaches the loader, kept on resume
    res = runner.invoke(cli.main, ["train", "--resume", "--run-dir", str(run), "--epochs", "2",
                                   "--flip", "--segment-clips", "5000",
                                   "--handover-stream", "side"])  # fmt: skip
    assert res.exit_code == 0, res.output
    saved = json.loads((run / "config.json").read_text())
    # only what was given changes (NVDEC's plan length and the GPU hand-over's stream are kept
    # with the run, unused on the CPU)
    assert saved["loader_options"] == {**want, "flip": True, "gpu_segment_clips": 5000,
                                       "handover_stream": "side"}  # fmt: skip
    assert [json.loads(ln)["epoch"] for ln in (run / "metrics.jsonl").read_text().splitlines()] == [
        1, 2,
    ]  # fmt: skip
    assert "resumed" in (run / "train.log").read_text()
    res = runner.invoke(cli.main, ["eval", "--ckpt", str(run / "last.pdckpt"), "--mode", "video",
                                   "--windows", "hara"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (run / "eval-last" / "confusion_video.png").is_file()
    assert json.loads((run / "eval-last" / "eval.json").read_text())["windows"] == "hara"
    res = runner.invoke(cli.main, ["export", "--ckpt", str(run / "best.pdckpt"), "--out",
                                   str(tmp_path / "export")])  # fmt: skip
    assert res.exit_code == 0, res.output
    video = next(prepared.work.glob("videos/*/*.webm"))
    res = runner.invoke(cli.main, ["predict", str(video), "--model", str(tmp_path / "export")])
    assert res.exit_code == 0, res.output
    assert len(res.output.strip().splitlines()) == 4  # header + 3 classes


def test_relative_paths_work_from_another_folder(
    prepared, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """config.json keeps absolute paths, and --manifests alone finds the summary's shards."""
    import os

    from click.testing import CliRunner

    import cli

    run, cwd = tmp_path / "run", tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # no shards/ here: --shards must come from the split summary
    args = ["train", "--model", "tiny", "--clip-size", "32", "--batch-size", "8", "--epochs", "1",
            "--max-steps", "1", "--max-val-steps", "1", "--threads", "2",
            "--manifests", os.path.relpath(prepared.manifests), "--run-dir", str(run)]  # fmt: skip
    res = CliRunner().invoke(cli.main, args)
    assert res.exit_code == 0, res.output
    saved = json.loads((run / "config.json").read_text())
    assert saved["manifests"] == str(prepared.manifests.resolve()) and saved["shards"] is None
    monkeypatch.chdir(tmp_path)  # elsewhere: neither manifests/ nor shards/ here
    res = CliRunner().invoke(cli.main, ["eval", "--ckpt", str(run / "last.pdckpt"), "--mode",
                                        "clip", "--threads", "2"])  # fmt: skip
    assert res.exit_code == 0, res.output
    state = ck.load_checkpoint(run / ck.LAST)
    state["config"]["manifests"] = "manifests"  # as older runs stored it: relative
    ck.save_checkpoint(tmp_path / "old.pdckpt", state)
    res = CliRunner().invoke(cli.main, ["eval", "--ckpt", str(tmp_path / "old.pdckpt")])
    assert res.exit_code == 1 and "the data it was trained on is not at" in res.output
    assert "pass --manifests" in res.output
    args = ["eval", "--ckpt", str(tmp_path / "old.pdckpt"), "--mode", "clip",
            "--manifests", str(prepared.manifests)]  # fmt: skip
    res = CliRunner().invoke(cli.main, args)
    assert res.exit_code == 0, res.output  # overridden; the shards come from that summary
