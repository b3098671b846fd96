"""Accuracy on hand-made scores (last video included); evaluate_checkpoint outputs and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import cli
from train import checkpoint as ck
from train.config import TrainConfig
from train.data import ArrayClips, random_clips
from train.evaluation import evaluate_checkpoint
from train.loop import evaluate
from train.metrics import (
    average_per_video,
    confusion_matrix,
    per_class_accuracy,
    summarize,
    topk_accuracy,
)
from train.run import fit

CLASSES = ["A", "B", "C", "D", "E", "F"]


def onehotish(rows: list[list[float]]) -> np.ndarray:
    return np.log(np.asarray(rows, dtype=np.float64))  # logits whose softmax is `rows`


def test_topk_on_hand_made_scores() -> None:
    scores = np.array([[0.1, 0.5, 0.2, 0.2], [0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]])
    labels = np.array([1, 1, 0])
    assert topk_accuracy(scores, labels, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(scores, labels, 2) == pytest.approx(2 / 3)
    assert topk_accuracy(scores, labels, 5) == 1.0  # k beyond the class count: everything


def test_video_average_keeps_the_last_video() -> None:
    # video v0: two clips say class 0 weakly, one says class 2 strongly -> mean picks 2
    # v1: one clip, class 1. v2 (the LAST video, which Hara's test.py dropped): class 3
    logits = onehotish([
        [0.5, 0.1, 0.4, 0.0001], [0.5, 0.1, 0.4, 0.0001], [0.01, 0.01, 0.97, 0.01],
        [0.1, 0.7, 0.1, 0.1],
        [0.1, 0.1, 0.1, 0.7], [0.2, 0.1, 0.1, 0.6],
    ])  # fmt: skip
    labels = np.array([2, 2, 2, 1, 3, 3])
    keys = ["v0", "v0", "v0", "v1", "v2", "v2"]
    vkeys, scores, vlabels, counts = average_per_video(logits, labels, keys)
    assert vkeys == ["v0", "v1", "v2"]
    assert counts.tolist() == [3, 1, 2] and vlabels.tolist() == [2, 1, 3]
    np.testing.assert_allclose(scores[2], [0.15, 0.1, 0.1, 0.65], atol=1e-6)
    assert scores.argmax(1).tolist() == [2, 1, 3]
    assert topk_accuracy(logits, labels, 1) == pytest.approx(4 / 6)  # clip level
    assert topk_accuracy(scores, vlabels, 1) == 1.0  # video level


def test_interleaved_keys_and_label_conflict() -> None:
    logits = onehotish([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
    vkeys, scores, vlabels, counts = average_per_video(logits, np.array([0, 1, 0]), ["a", "b", "a"])
    assert vkeys == ["a", "b"] and counts.tolist() == [2, 1]
    np.testing.assert_allclose(scores[0], [0.8, 0.2])
    with pytest.raises(ValueError, match="clips of video a carry different labels"):
        average_per_video(logits, np.array([0, 1, 1]), ["a", "b", "a"])


def test_confusion_and_per_class() -> None:
    cm = confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 4)
    assert cm.tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    pc = per_class_accuracy(cm)
    assert pc[:3].tolist() == [1.0, 1.0, 0.5] and np.isnan(pc[3])


def test_summarize_reports_every_video() -> None:
    logits = onehotish([[0.7, 0.1, 0.1, 0.1, 0.0, 0.0], [0.1, 0.1, 0.1, 0.1, 0.1, 0.5]])
    s = summarize(logits + 1e-9, np.array([0, 4]), ["x", "y"], CLASSES)
    assert [v["key"] for v in s["predictions"]] == ["x", "y"]
    assert s["predictions"][-1]["pred_class"] == "F" and not s["predictions"][-1]["correct"]
    assert s["video_top1"] == 0.5 and s["per_class"]["A"] == 1.0 and s["per_class"]["B"] is None
    assert len(s["predictions"][0]["top5"]) == 5


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, ArrayClips]]:
    x, y = random_clips(13, 4, size=32, seed=2)  # 13 clips: a last partial batch
    classes = CLASSES[:4]
    keys = [f"v_{i // 3:02d}" for i in range(13)]  # v_04 is a one-clip last video
    train = ArrayClips(x, y, classes, batch_size=4, shuffle=True)
    cfg = TrainConfig(
        model="tiny", size=32, batch_size=4, epochs=1, run_dir=tmp_path_factory.mktemp("run")
    )
    run = fit(cfg, train_data=train, val_data=None)
    labels = np.array([y[(i // 3) * 3] for i in range(13)])
    video = ArrayClips(x, labels, classes, batch_size=4, keys=keys)
    return run / ck.LAST, {"clip": video, "video": video}


def test_evaluate_checkpoint_writes_everything(trained, tmp_path: Path) -> None:
    ckpt, data = trained
    r = evaluate_checkpoint(ckpt, data=data, out_dir=tmp_path / "ev")
    assert set(r["modes"]) == {"clip", "video"}
    for key in ("clip_top1", "clip_top5", "video_top1", "video_top5"):
        assert 0.0 <= r[key] <= 1.0
    assert r["video_top5"] == 1.0  # 4 classes
    preds = json.loads(Path(r["files"]["video"]["predictions"]).read_text())["videos"]
    assert [v["key"] for v in preds] == [f"v_{i:02d}" for i in range(5)]
    assert preds[-1]["clips"] == 1
    assert Path(r["files"]["video"]["confusion_png"]).read_bytes()[:4] == b"\x89PNG"
    saved = json.loads(Path(r["files"]["eval"]).read_text())
    assert set(saved["per_class"]) == set(CLASSES[:4]) and saved["epoch"] == 1
    assert saved["windows"] == "full"  # which video-mode windows were scored
    with pytest.raises(ValueError, match="unknown windows 'all'; valid: full, hara"):
        evaluate_checkpoint(ckpt, data=data, out_dir=tmp_path / "ev2", windows="all")


def test_evaluate_checkpoint_default_out_dir(trained) -> None:
    ckpt, data = trained
    r = evaluate_checkpoint(ckpt, modes=("video",), data=data)
    assert Path(r["files"]["eval"]) == ckpt.parent / "eval-last" / "eval.json"


def test_eval_refuses_other_class_count(trained) -> None:
    ckpt, data = trained
    x, y = random_clips(4, 6, size=32)
    other = ArrayClips(x, y, CLASSES, batch_size=4)
    with pytest.raises(ck.CheckpointError, match=r"last\.pdckpt: trained on 4 classes"):
        evaluate_checkpoint(ckpt, modes=("clip",), data={"clip": other})


def test_cli_eval_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(cli.main, ["eval", "--ckpt", str(tmp_path / "nope.pdckpt")])
    assert res.exit_code == 1
    assert res.output.strip() == f"Error: {tmp_path / 'nope.pdckpt'}: checkpoint not found " \
        "(check the path, or train first)"  # fmt: skip
    junk = tmp_path / "junk.pdckpt"
    junk.write_bytes(b"not a checkpoint")
    res = runner.invoke(cli.main, ["eval", "--ckpt", str(junk)])
    assert res.exit_code == 1 and "junk.pdckpt: not a readable checkpoint" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_eval_never_scores_or_writes_nan(trained, tmp_path: Path) -> None:
    ckpt, data = trained
    state = ck.load_checkpoint(ckpt)
    name = next(iter(state["model"]))
    state["model"][name] = state["model"][name] * float("nan")  # a diverged run's weights
    ck.save_checkpoint(tmp_path / "nan.pdckpt", state)
    res = CliRunner().invoke(cli.main, ["eval", "--ckpt", str(tmp_path / "nan.pdckpt"),
                                        "--out", str(tmp_path / "a")])  # fmt: skip
    assert res.exit_code == 1 and "nan.pdckpt: weights hold NaN or inf" in res.output
    with pytest.raises(ck.CheckpointError, match="weights hold NaN or inf"):
        evaluate_checkpoint(tmp_path / "nan.pdckpt", data=data, out_dir=tmp_path / "b")
    model, _ = ck.model_from_checkpoint(ckpt)
    model.fc.weight.set_value(model.fc.weight * float("nan"))  # diverged after loading
    with pytest.raises(RuntimeError, match="13 of 13 clips got non-finite logits"):
        evaluate(model, data["clip"].epoch(0))
    assert not list(tmp_path.rglob("eval.json"))


class _NeverRead(ArrayClips):
    def epoch(self, index: int):
        raise AssertionError("evaluated before the output folder was checked")


def test_eval_out_read_only_fails_before_any_pass(trained, readonly_dir: Path) -> None:
    ckpt, data = trained
    never = _NeverRead(data["clip"].clips, data["clip"].labels, CLASSES[:4], batch_size=4)
    with pytest.raises(OSError, match=f"{readonly_dir}: cannot write there"):
        evaluate_checkpoint(ckpt, data={"clip": never, "video": never}, out_dir=readonly_dir)
    res = CliRunner().invoke(cli.main, ["eval", "--ckpt", str(ckpt), "--out", str(readonly_dir)])
    assert res.exit_code == 1 and f"Error: {readonly_dir}: cannot write there" in res.output


def test_report_names_a_malformed_eval_json(trained, tmp_path: Path) -> None:
    import shutil

    ckpt, _ = trained
    run = tmp_path / "run"
    shutil.copytree(ckpt.parent, run)
    ev = run / "eval-x"
    ev.mkdir()
    cases = (("{not json", "eval.json: unreadable"),
             ('{"modes": {}}', "eval.json: missing checkpoint, model"),
             ("[1, 2]", "eval.json: not an eval.json written by `ucf3d eval`"))  # fmt: skip
    for text, message in cases:
        (ev / "eval.json").write_text(text)
        res = CliRunner().invoke(cli.main, ["report", str(run), "--eval-dir", str(ev)])
        assert res.exit_code == 1 and res.output.startswith(f"Error: {ev / 'eval.json'}: "), text
        assert message in res.output and len(res.output.strip().splitlines()) == 1


def test_json_outputs_never_hold_nan(tmp_path: Path) -> None:
    from train.config import write_json

    with pytest.raises(ValueError, match=r"x\.json: not written, the values hold NaN or infinity"):
        write_json(tmp_path / "x.json", {"video_top1": float("nan")})
    assert not list(tmp_path.iterdir())
