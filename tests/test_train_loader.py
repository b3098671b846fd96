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
from train.loop import fit  # noqa: E402
from train.preprocess import video_clips  # noqa: E402


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
