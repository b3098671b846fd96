"""Host-side cost of planning one NVDEC segment (loader.gpu), no GPU needed.

    python bench/segment_cost.py --manifests M --shards S [--split 1] [--clips 50000 2000000]

For each `--segment-clips` value: the seconds to plan the segment's epochs and to write its
pipelines' file lists, and the lists' size; one JSON line each. DALI then parses those lists and
opens every distinct file named in them (bench/demux_memory.py measures what each open file
holds), which this does not time.

Also what the plan costs Python's cyclic GC, which scans every tracked object holding the lock: the
objects in the process and the milliseconds of one full collection before planning, with the plan
alive, and with it frozen (`gc.freeze()`, what loader.gpu does after a segment built in front).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loader import ClipLoader, LoaderConfig  # noqa: E402
from loader.gpu import GpuBackend  # noqa: E402
from loader.segment import file_lists  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifests", type=Path, required=True)
    ap.add_argument("--shards", type=Path, required=True)
    ap.add_argument("--split", type=int, default=1)
    ap.add_argument("--clips", type=int, nargs="+", default=[50_000, 2_000_000])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        base = dict(manifests=args.manifests, shards=args.shards, split=args.split,
                    batch_size=128, decode="gpu", num_threads=1, cache_dir=Path(cache))  # fmt: skip
        for clips in args.clips:
            cfg = LoaderConfig(gpu_segment_clips=clips, **base)
            with ClipLoader(cfg) as loader:
                backend = GpuBackend(cfg, loader.dataset, planner=loader.batches)
                try:
                    before = _gc_pass()
                    t0 = time.perf_counter()
                    epochs = backend._plan(0, loader.batches(0))
                    t1 = time.perf_counter()
                    chunks = [c for e in epochs for c in backend._chunks(e)]
                    _, texts = file_lists(chunks, backend.paths, cfg.gpu_pipelines,
                                          cfg.gpu_batch, cfg.clip_len)  # fmt: skip
                    t2 = time.perf_counter()
                    alive = _gc_pass()
                    gc.freeze()
                    frozen = _gc_pass()
                    gc.unfreeze()
                finally:
                    backend.close()
            print(json.dumps({"bench": "segment_cost", "segment_clips": clips,
                              "epochs": len(epochs), "plan_s": round(t1 - t0, 2),
                              "lists_s": round(t2 - t1, 2),
                              "lists_mb": round(sum(len(t) for t in texts) / 1e6, 1),
                              "gc_objects": {"before": before[0], "plan": alive[0]},
                              "gc_full_ms": {"before": before[1], "plan": alive[1],
                                             "plan_frozen": frozen[1]}}),
                  flush=True)  # fmt: skip


def _gc_pass() -> tuple[int, float]:
    """(objects the GC tracks and scans, ms of one full collection now)."""
    gc.collect()
    t0 = time.perf_counter()
    gc.collect()
    return len(gc.get_objects()), round(1000 * (time.perf_counter() - t0), 1)


if __name__ == "__main__":
    main()
