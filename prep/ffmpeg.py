"""The one ffmpeg wrapper: argument lists, -nostdin, captured stderr, DecodeError on failure."""

from __future__ import annotations

import logging
import os
import re
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

ENV_FFMPEG = "UCF3D_FFMPEG"  # a system ffmpeg may override the one imageio-ffmpeg ships
_STDERR_TAIL = 2000


class DecodeError(RuntimeError):
    """ffmpeg could not read or write `path`; `stderr_tail` is the end of its log."""

    def __init__(self, path: Path | str, stderr_tail: str) -> None:
        self.path = Path(path)
        self.stderr_tail = stderr_tail.strip()
        last = self.stderr_tail.splitlines()[-1] if self.stderr_tail else "no output"
        super().__init__(f"{self.path}: ffmpeg failed: {last}")

    def __reduce__(self) -> tuple:  # picklable, so it can cross a process pool
        return type(self), (self.path, self.stderr_tail)


def ffmpeg_exe(override: str | os.PathLike | None = None) -> str:
    """The ffmpeg binary: `override`, else $UCF3D_FFMPEG, else the one shipped by imageio-ffmpeg."""
    exe = override or os.environ.get(ENV_FFMPEG)
    if exe:
        return os.fspath(exe)
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def check_ffmpeg(override: str | os.PathLike | None = None, encoder: str | None = None) -> str:
    """The ffmpeg binary, once checked to run (and to have `encoder`); else a RuntimeError naming
    it. Checked up front so that a missing or broken binary is not reported as every video being
    undecodable."""
    exe = ffmpeg_exe(override)
    hint = f"pass a working one with --ffmpeg or ${ENV_FFMPEG}, or unset both for the bundled one"
    try:
        proc = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise RuntimeError(f"{exe}: cannot run ffmpeg ({e}); {hint}") from e
    if proc.returncode != 0 or b"Encoders:" not in proc.stdout:
        tail = _tail(proc.stderr).strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        raise RuntimeError(f"{exe}: not a working ffmpeg ({tail[0]}); {hint}")
    if encoder is not None and f" {encoder} ".encode() not in proc.stdout:
        raise RuntimeError(f"{exe}: this ffmpeg has no {encoder} encoder; {hint}")
    return exe


def run_ffmpeg(
    args: list[str],
    path: Path | str,
    *,
    ffmpeg: str | None = None,
    stdin: bytes | None = None,
    loglevel: str = "error",
) -> subprocess.CompletedProcess[bytes]:
    """Run `ffmpeg args...` about `path`; raise DecodeError(path, stderr_tail) when it fails.

    With the default loglevel "error", anything ffmpeg writes to stderr is an error it met (a
    corrupt packet, a truncated file), and that is treated as failure too: decoding that "mostly
    worked" must not silently produce a shorter video.
    """
    cmd = [ffmpeg_exe(ffmpeg), "-hide_banner", "-loglevel", loglevel]
    if stdin is None:
        cmd.append("-nostdin")  # never let ffmpeg read the terminal
    cmd += args
    log.debug("run %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, check=True)
    except subprocess.CalledProcessError as e:
        raise DecodeError(path, _tail(e.stderr)) from e
    except FileNotFoundError as e:
        raise DecodeError(path, f"ffmpeg binary not found: {cmd[0]}") from e
    if loglevel == "error" and proc.stderr.strip():
        raise DecodeError(path, _tail(proc.stderr))
    return proc


def _tail(raw: bytes | None) -> str:
    return (raw or b"").decode("utf-8", "replace")[-_STDERR_TAIL:]


_FRAME_RE = re.compile(rb"^frame=(\d+)\s*$", re.MULTILINE)


def count_frames(path: Path, *, ffmpeg: str | None = None) -> int:
    """Exact number of frames ffmpeg decodes from the first video stream of `path`.

    Decodes every frame (`-f null`) and reads the final `frame=` of `-progress`; never derived
    from duration x fps.
    """
    proc = run_ffmpeg(
        ["-i", os.fspath(path), "-map", "0:v:0", "-f", "null", "-progress", "pipe:1", "-"],
        path,
        ffmpeg=ffmpeg,
    )
    counts = _FRAME_RE.findall(proc.stdout)
    if not counts:
        raise DecodeError(path, "no frame count in ffmpeg -progress output")
    return int(counts[-1])
