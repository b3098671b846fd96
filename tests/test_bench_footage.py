"""`ucf3d bench footage`: UCF-shaped clips cut from a camera video, which extract takes whole."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from cli import main
from prep.extract import ExtractConfig, extract
from prep.synth import write_clip


def test_footage_clips_extract_cleanly_and_deterministically(tmp_path: Path) -> None:
    source = write_clip(tmp_path / "src" / "camera.avi", 0, 1, 1, n_frames=100)  # 4 s, 320x240
    outs = []
    for name in ("a", "b"):
        res = CliRunner().invoke(main, ["bench", "footage", str(tmp_path / name), "--source",
                                        str(source), "--classes", "1", "--groups", "8",
                                        "--jobs", "2"])  # fmt: skip
        assert res.exit_code == 0, res.output
        outs.append(tmp_path / name)
    videos = sorted((outs[0] / "UCF-101" / "Footage01").glob("*.avi"))
    assert len(videos) == 8
    same = [(v.read_bytes() == (outs[1] / "UCF-101" / "Footage01" / v.name).read_bytes())
            for v in videos]  # fmt: skip
    assert all(same)  # same seed, same bytes
    lists = outs[0] / "ucfTrainTestlist"
    assert len((lists / "trainlist01.txt").read_text().splitlines()) == 1  # group 8
    assert len((lists / "testlist01.txt").read_text().splitlines()) == 7  # groups 1-7
    work = tmp_path / "work"
    extract(ExtractConfig(outs[0] / "UCF-101", lists, work, jobs=2))
    assert not (work / "errors.jsonl").exists() or not (work / "errors.jsonl").read_text().strip()
    index = [json.loads(ln) for ln in (work / "index.jsonl").read_text().splitlines()]
    assert len(index) == 8
    assert all(40 <= r["n_frames"] <= 90 for r in index)  # 1.6-3.6 s at 25 fps
