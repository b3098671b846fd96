"""Host memory per open demuxer, the cost of longer NVDEC plans (loader.gpu, `--segment-clips`).

    python bench/demux_memory.py --videos DIR [--count 2000]

DALI's `readers.video` opens every distinct file of a pipeline's file list when the pipeline is
built and keeps its demuxer (an AVFormatContext and a bitstream filter) until the pipeline goes,
so a segment's host memory grows with the distinct files its 24 lists name. This opens `--count`
of the .webm files under DIR (cycling through them) with PyAV, reads the first packet and seeks
back (as a decode does), keeps them all open, and prints one JSON line with the resident memory
each added. PyAV (`pip install av`) is a proxy for DALI's libavformat use (PyAV reads through a
32 KB buffer, DALI through 4 KB), and is needed by this script alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loader.hostmem import host_rss_bytes  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=Path, required=True, help="a folder holding .webm files")
    ap.add_argument("--count", type=int, default=2000)
    args = ap.parse_args()
    try:
        import av
    except ImportError:
        sys.exit("Error: bench/demux_memory.py: needs PyAV (pip install av)")
    files = sorted(args.videos.rglob("*.webm"))
    if not files:
        sys.exit(f"Error: {args.videos}: no .webm files")
    if host_rss_bytes() is None:
        sys.exit("Error: bench/demux_memory.py: no /proc/self/statm here (Linux only)")
    held = []
    base = host_rss_bytes()
    for i in range(args.count):
        container = av.open(str(files[i % len(files)]))
        stream = container.streams.video[0]
        next(container.demux(stream))  # the first packet, as DALI reads on opening a file
        container.seek(0, stream=stream)  # a seek loads the cue index, as decoding a window does
        held.append(container)
    kb = (host_rss_bytes() - base) / args.count / 1024
    print(json.dumps({"bench": "demux_memory", "containers": args.count,
                      "distinct_files": len(files), "kb_each": round(kb, 1),
                      "av": av.__version__}))  # fmt: skip


if __name__ == "__main__":
    main()
