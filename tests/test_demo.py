"""The demo end to end on a small synthetic set: learning, the run report, `ucf3d report`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from demo import DemoConfig, run_demo

# 3 classes (MoveLeft, MoveRight, PushLeft: direction and speed of one motion) x 12 groups x 3
# clips of ~1.6 s; split 1 trains on groups 8-12 (45 videos) and tests on groups 1-7 (63 videos,
# unseen scenes). Deterministic: 48 of 63 test videos right (76 %) on the 2-core dev box, ~70 s.
SMALL = dict(classes=3, groups=12, clips=3, seconds=1.6, short_side=48, size=40, epochs=16,
             milestones=(13,), val_every=8, batch_size=6)  # fmt: skip
# Chance is 1/3 (21 of 63); guessing gets >= 39 of 63 right with probability ~2e-6.
MIN_ACC = 39 / 63


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    return run_demo(DemoConfig(out=out, **SMALL))


def test_demo_learns(demo_run) -> None:
    """Motion-only classes on unseen scenes: clips must arrive in order with the right labels."""
    assert demo_run.video_top1 >= MIN_ACC, f"video top-1 {demo_run.video_top1:.3f}"


@pytest.mark.slow
def test_demo_runs_and_reports(demo_run) -> None:
    r = demo_run
    assert 0 <= r.clip_top1 <= 1 and 0 <= r.video_top1 <= 1
    assert set(r.seconds) == {"synth", "extract", "shard", "train", "eval", "report"}
    for path in (r.shards, r.manifests, r.run_dir / "last.pdckpt", r.eval_dir / "eval.json"):
        assert path.exists(), path
    text = r.report.read_text(encoding="utf-8")
    for piece in ("## Configuration", "video top-1", "MoveLeft", "PushLeft", "clips/s",
                  "data wait", "curves.png", "confusion_video.png",
                  "CPU time taken by the hypervisor"):  # fmt: skip
        assert piece in text, piece
    assert (r.run_dir / "curves.png").stat().st_size > 1000
    record = json.loads((r.out / "demo.json").read_text(encoding="utf-8"))
    assert record["video_top1"] == r.video_top1


@pytest.mark.slow
def test_demo_rerun_skips_finished_stages(demo_run) -> None:
    r = run_demo(DemoConfig(out=demo_run.out, **SMALL))
    assert {"synth", "extract", "shard", "train", "eval"} <= set(r.skipped)
    assert r.video_top1 == demo_run.video_top1


def test_demo_refuses_other_settings(demo_run) -> None:
    with pytest.raises(ValueError, match="other settings"):
        run_demo(DemoConfig(out=demo_run.out, **{**SMALL, "epochs": 3}))


def test_demo_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    res = CliRunner().invoke(main, ["demo", "--out", str(tmp_path)])
    assert res.exit_code == 1 and "not a demo folder" in res.output


def test_report_cli_rebuilds(demo_run) -> None:
    report = demo_run.report
    report.unlink()
    (demo_run.run_dir / "curves.png").unlink()
    res = CliRunner().invoke(main, ["report", str(demo_run.run_dir)])
    assert res.exit_code == 0, res.output
    assert report.is_file() and (demo_run.run_dir / "curves.png").is_file()
    assert "video top-1" in report.read_text(encoding="utf-8")


def test_report_cli_not_a_run_dir(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert res.exit_code == 1
    assert str(tmp_path) in res.output and "not a run directory" in res.output
