"""The training format: ffmpeg encoder settings, exact decoded frame counts, truncated sources."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ondisk import VIDEO_EXT
from prep.ffmpeg import DecodeError

DEFAULT_CRF = {"vp9": 40, "h264": 23}  # both above the JPEG route's quality (docs/BENCHMARKS.md)
_CONTAINER = {"vp9": "webm", "h264": "mp4"}  # ffmpeg muxer; PyAV reads webm as "matroska"


@dataclass(frozen=True)
class Encoding:
    """Everything that determines the output bytes; a change re-encodes every video."""

    codec: str = "vp9"  # "vp9" (DALI 2.4 decodes it on CPU and GPU) or "h264"
    short_side: int = 128
    fps: int = 25
    gop: int = 8  # a keyframe every `gop` frames
    crf: int | None = None  # None: DEFAULT_CRF[codec]

    def __post_init__(self) -> None:
        if self.codec not in VIDEO_EXT:
            raise ValueError(f"unknown codec {self.codec!r}; choose from {', '.join(VIDEO_EXT)}")
        if self.short_side % 2:
            raise ValueError(f"--short-side must be even for yuv420p, got {self.short_side}")
        if self.crf is None:
            object.__setattr__(self, "crf", DEFAULT_CRF[self.codec])

    @property
    def encoder(self) -> str:  # the ffmpeg encoder this needs
        return "libvpx-vp9" if self.codec == "vp9" else "libx264"

    @property
    def ext(self) -> str:
        return VIDEO_EXT[self.codec]

    def ffmpeg_args(self, src: Path, dst: Path) -> list[str]:
        """Constant fps, short side scaled (other side even), yuv420p, closed GOPs, no reordering,
        no audio or metadata, bit-exact muxing, one encoder thread (--jobs gives parallelism)."""
        s, g = self.short_side, str(self.gop)
        vf = f"fps={self.fps},scale=w='if(gte(iw,ih),-2,{s})':h='if(gte(iw,ih),{s},-2)'"
        args = ["-i", os.fspath(src), "-vf", vf + ":flags=bicubic"]
        args += "-map 0:v:0 -an -sn -dn -pix_fmt yuv420p -threads 1 -map_metadata -1".split()
        args += "-fflags +bitexact -flags:v +bitexact".split()
        if self.codec == "vp9":
            # realtime/cpu-used 8: libvpx's fastest setting. No alt-ref frames and no lag, so
            # every packet is one shown frame and decode order is display order.
            args += "-c:v libvpx-vp9 -deadline realtime -cpu-used 8 -b:v 0 -row-mt 0".split()
            args += "-auto-alt-ref 0 -lag-in-frames 0".split()
            args += ["-crf", str(self.crf), "-g", g, "-keyint_min", g]
        else:
            args += "-c:v libx264 -preset veryfast -bf 0 -movflags +faststart".split()
            args += ["-crf", str(self.crf)]
            args += ["-x264-params", f"keyint={g}:min-keyint={g}:scenecut=0:open-gop=0"]
        return [*args, "-f", _CONTAINER[self.codec], "-y", os.fspath(dst)]


def decode_output(path: Path, codec: str) -> tuple[int, int, int]:
    """(frames, width, height) of a training-format video, by decoding every frame.

    In-process (PyAV) rather than a second ffmpeg run: just as exact, a third of the CPU time.
    Raises DecodeError if the output does not decode cleanly.
    """
    import av

    fmt = "matroska" if codec == "vp9" else "mp4"  # the file may still carry its .tmp name
    try:
        with av.open(os.fspath(path), format=fmt) as c:
            stream = c.streams.video[0]
            stream.thread_type = "NONE"  # one core per job
            n = width = height = 0
            for frame in c.decode(stream):
                n, width, height = n + 1, frame.width, frame.height
    except (av.FFmpegError, IndexError) as e:
        raise DecodeError(path, f"output does not decode: {e}") from e
    return n, width, height


def probe_source(src: Path, fps: int) -> tuple[int | None, str | None]:
    """(frames the header promises, converted to `fps`, or None; a truncation reason, or None).

    Demuxes without decoding: a file holding fewer packets than its header promises was cut
    short (a copy or download that stopped), even when every packet it holds decodes cleanly.
    """
    import av

    try:
        with av.open(os.fspath(src)) as c:
            if not c.streams.video:  # an audio-only file, say: opens fine, nothing to encode
                return None, "no video stream: the file holds no video, only " + (
                    ", ".join(sorted({st.type for st in c.streams})) or "nothing"
                )
            s = c.streams.video[0]
            declared, rate = s.frames, s.average_rate
            packets = sum(1 for p in c.demux(s) if p.dts is not None or p.size)
    except (av.FFmpegError, IndexError, ValueError):
        return None, None  # ffmpeg itself will say what is wrong
    if not declared or not rate:
        return None, None
    if packets < declared:
        return None, f"truncated: header declares {declared} frames, the file holds {packets}"
    return round(declared * fps / float(rate)), None
