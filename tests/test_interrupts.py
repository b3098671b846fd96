"""Signals through real subprocesses: Ctrl-C exits 130 at once, no worker outlives its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 20  # seconds for any one wait; every wait here is bounded


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid` (pool workers and their ffmpegs), from /proc."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier} - found
        found |= frontier
    return {p for p in found if _alive(p)}


def _start_extract(synth_root: Path, out: Path) -> tuple[subprocess.Popen, set[int]]:
    """`ucf3d extract --jobs 2` in its own session (stderr to out/../stderr.txt, no pipes an
    orphan could hold open), once both workers and an ffmpeg are running."""
    lists, videos = synth_root / "ucfTrainTestlist", synth_root / "UCF-101"
    cmd = [sys.executable, str(REPO / "cli.py"), "extract", "--videos", str(videos),
           "--splits", str(lists), "--out", str(out), "--jobs", "2"]  # fmt: skip
    with open(out.parent / "stderr.txt", "wb") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)  # fmt: skip
    deadline = time.time() + TIMEOUT
    kids: set[int] = set()
    while time.time() < deadline and proc.poll() is None:
        kids = _descendants(proc.pid)
        if len(kids) >= 3 and (out / "videos").is_dir():  # 2 workers + an ffmpeg, encoding
            return proc, kids
        time.sleep(0.05)
    _kill_all(proc, kids)
    pytest.fail(f"extract did not get going: {(out.parent / 'stderr.txt').read_text()}")


def _kill_all(proc: subprocess.Popen, pids: set[int]) -> None:
    for pid in {proc.pid} | pids | _descendants(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=TIMEOUT)


def _wait_gone(pids: set[int]) -> set[int]:
    deadline = time.time() + TIMEOUT
    while time.time() < deadline and any(map(_alive, pids)):
        time.sleep(0.05)
    return {p for p in pids if _alive(p)}


def test_repeated_ctrl_c_exits_130_at_once_without_orphans(
    synth_root: Path, tmp_path: Path
) -> None:
    proc, kids = _start_extract(synth_root, tmp_path / "w")
    try:
        for _ in range(3):  # Ctrl-C pressed three times in 0.1 s, to the whole process group
            os.killpg(proc.pid, signal.SIGINT)
            time.sleep(0.05)
        proc.wait(timeout=TIMEOUT)  # it used to hang here
        err = (tmp_path / "stderr.txt").read_text()
        assert proc.returncode == 130, err
        assert "Traceback" not in err and "run the same command again to resume" in err
        assert not _wait_gone(kids | _descendants(proc.pid))
    finally:
        _kill_all(proc, kids)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGHUP])
def test_workers_die_with_their_parent(synth_root: Path, tmp_path: Path, sig: int) -> None:
    proc, kids = _start_extract(synth_root, tmp_path / "w")
    try:
        os.kill(proc.pid, sig)  # the main process only, as `kill PID` or the OOM killer would
        proc.wait(timeout=TIMEOUT)
        assert proc.returncode == -sig
        assert not _wait_gone(kids), "workers outlived their parent"
    finally:
        _kill_all(proc, kids)
