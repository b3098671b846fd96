"""What the GPU runs during fed steps: the training stream's work against the loader's.

`ucf3d bench feed --profile-steps N` runs N more fed steps after its timed window under the
PyTorch profiler (CUPTI records every kernel and copy of the process, DALI's threads' included)
and adds `kernels` to its JSON line: per step, how many kernels and copies the step's stream and
the loader's streams ran and for how long, how much of the loader's kernel time overlapped the
step's kernels (where the two shared the GPU), and the loader's costliest kernels.

The training stream is the stream with the most device time (a 60 ms step against the loader's
many short kernels spread over dozens of streams); everything else is the loader's (its own
streams, the hand-over kernels are on the step's stream).

`gaps` reads a whole kept trace (`bench feed --profile-trace FILE`): the training stream's idle
stretches, what ran in them, and for one kernel (by name) when it was launched against when it
ran, which tells a kernel that waited for a dependency from one that was late to be queued
(docs/BENCHMARKS.md, seventeenth round). From the shell: `python -m bench.kernels TRACE.json.gz
[--watch crop] [--over-us 30]`, one JSON line.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
from bisect import bisect_right
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

GPU_CATS = {"kernel": "kernel", "gpu_memcpy": "copy", "gpu_memset": "copy"}
NAME_CHARS = 90  # template-heavy kernel names are cut to this


def summarize(trace: dict[str, Any], steps: int, top: int = 10) -> dict[str, Any]:
    """A chrome trace (the PyTorch profiler's `export_chrome_trace`) of `steps` fed steps -> the
    per-step summary described in the module docstring (times in ms, kernels' in us)."""
    work = [e for e in trace.get("traceEvents", [])
            if e.get("ph") == "X" and e.get("cat") in GPU_CATS]  # fmt: skip
    if not work or steps < 1:
        raise ValueError("the profile holds no GPU work (was CUDA activity recorded?)")
    busy: dict[Any, float] = defaultdict(float)
    for e in work:
        busy[_stream(e)] += float(e.get("dur", 0))
    train = max(busy, key=busy.__getitem__)
    mine = [e for e in work if _stream(e) == train]
    theirs = [e for e in work if _stream(e) != train]
    spans = _union([(float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0)))
                    for e in mine if GPU_CATS[e["cat"]] == "kernel"])  # fmt: skip
    loader_kernels = [e for e in theirs if GPU_CATS[e["cat"]] == "kernel"]
    overlap = sum(_overlap(spans, float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0)))
                  for e in loader_kernels)  # fmt: skip
    return {
        "steps": steps,
        "train_stream": {**_totals(mine, steps), "stream": train},
        "loader": {
            **_totals(theirs, steps),
            "streams": len(busy) - 1,
            "kernel_ms_beside_step": round(overlap / 1000 / steps, 3),
            "top": _top(loader_kernels, steps, top),
        },
    }


def _stream(event: dict[str, Any]) -> Any:
    args = event.get("args", {})
    return args.get("stream", event.get("tid"))


def _totals(events: list[dict[str, Any]], steps: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for kind, many in (("kernel", "kernels"), ("copy", "copies")):
        mine = [e for e in events if GPU_CATS[e["cat"]] == kind]
        out[f"{many}_per_step"] = round(len(mine) / steps, 1)
        took = sum(float(e.get("dur", 0)) for e in mine)
        out[f"{kind}_ms_per_step"] = round(took / 1000 / steps, 3)
    return out


def _top(kernels: list[dict[str, Any]], steps: int, top: int) -> list[dict[str, Any]]:
    by_name: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in kernels:
        by_name[str(e.get("name", "?"))[:NAME_CHARS]].append(e)
    rows = []
    for name, group in by_name.items():
        total = sum(float(e.get("dur", 0)) for e in group)
        blocks = [_volume(e.get("args", {}).get("grid")) for e in group]
        rows.append({
            "name": name,
            "per_step": round(len(group) / steps, 1),
            "ms_per_step": round(total / 1000 / steps, 3),
            "mean_us": round(total / len(group), 1),
            "blocks": round(sum(blocks) / len(blocks), 1),
            "threads": _volume(group[0].get("args", {}).get("block")),
        })  # fmt: skip
    rows.sort(key=lambda r: -r["ms_per_step"])
    return rows[:top]


def _volume(dims: Any) -> int:
    if not isinstance(dims, list | tuple):
        return 0
    n = 1
    for d in dims:
        n *= int(d)
    return n


def _union(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Sorted, disjoint intervals covering `spans`."""
    out: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _overlap(union: list[tuple[float, float]], a: float, b: float) -> float:
    """Length of [a, b) covered by the disjoint sorted intervals `union`."""
    i = max(0, bisect_right(union, (a, float("inf"))) - 1)
    total = 0.0
    while i < len(union) and union[i][0] < b:
        lo, hi = max(a, union[i][0]), min(b, union[i][1])
        total += max(0.0, hi - lo)
        i += 1
    return total


def gaps(trace: dict[str, Any], watch: str = "crop", over_us: float = 30.0) -> dict[str, Any]:
    """The training stream's gaps over `over_us` between two of its kernels or copies, each with
    what other streams ran inside it (count by name, and the watched kernels' share of it), and
    for kernels whose name holds `watch`: their stream, and how long after its launch (the
    runtime or driver call of the same correlation id) each one started."""
    events = trace.get("traceEvents", [])
    work = [e for e in events if e.get("ph") == "X" and e.get("cat") in GPU_CATS]
    if not work:
        raise ValueError("the profile holds no GPU work (was CUDA activity recorded?)")
    busy: dict[Any, float] = defaultdict(float)
    for e in work:
        busy[_stream(e)] += float(e.get("dur", 0))
    train = max(busy, key=busy.__getitem__)
    mine = sorted((e for e in work if _stream(e) == train), key=lambda e: float(e["ts"]))
    theirs = [e for e in work if _stream(e) != train]
    rows = []
    for a, b in zip(mine, mine[1:], strict=False):
        lo, hi = _end(a), _start(b)
        if hi - lo <= over_us:
            continue
        inside = [e for e in theirs if _start(e) < hi and _end(e) > lo]
        watched = sum(min(hi, _end(e)) - max(lo, _start(e))
                      for e in inside if watch in str(e.get("name", "")))  # fmt: skip
        rows.append({"us": round(hi - lo, 1), "after": str(a.get("name", "?"))[:NAME_CHARS],
                     "watched_us": round(watched, 1),
                     "beside": dict(Counter(str(e.get("name", "?"))[:40] for e in inside)
                                    .most_common(4))})  # fmt: skip
    launches = {e["args"]["correlation"]: float(e["ts"]) for e in events
                if e.get("cat") in ("cuda_runtime", "cuda_driver")
                and "correlation" in e.get("args", {})}  # fmt: skip
    seen = sorted((e for e in work if watch in str(e.get("name", ""))), key=lambda e: e["ts"])
    delays = [round(_start(e) - launches[e["args"]["correlation"]], 1) for e in seen
              if e.get("args", {}).get("correlation") in launches]  # fmt: skip
    return {"train_stream": train, "over_us": over_us, "gaps": rows,
            "watch": {"name": watch, "kernels": len(seen),
                      "streams": sorted({str(_stream(e)) for e in seen}),
                      "launch_to_start_us": delays,
                      "others": _while_watched(theirs, seen, watch)}}  # fmt: skip


def _while_watched(others: list[dict[str, Any]], watched: list[dict[str, Any]], watch: str,
                   top: int = 4) -> dict[str, list[float]]:  # fmt: skip
    """The `top` most frequent other kernels off the training stream, each as [how many, median
    us] while a watched kernel ran (the kernel's middle inside one) and [how many, median us]
    otherwise: a kernel that runs faster while the watched one holds its SMs has gone elsewhere
    (e.g. DALI's conversions onto the step's SMs while the hand-over holds the loader's)."""
    spans = _union([(_start(e), _end(e)) for e in watched])
    by_name: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for e in others:
        name = str(e.get("name", "?"))
        if not spans or e.get("cat") != "kernel" or watch in name:
            continue
        mid = (_start(e) + _end(e)) / 2
        during, outside = by_name[name[:40]]
        (during if _overlap(spans, mid, mid + 1e-3) else outside).append(float(e.get("dur", 0)))
    common = sorted(by_name.items(), key=lambda kv: -(len(kv[1][0]) + len(kv[1][1])))[:top]

    def median(v: list[float]) -> float:
        return round(statistics.median(v), 1) if v else 0.0

    return {name: [len(a), median(a), len(b), median(b)] for name, (a, b) in common}


def _start(event: dict[str, Any]) -> float:
    return float(event["ts"])


def _end(event: dict[str, Any]) -> float:
    return float(event["ts"]) + float(event.get("dur", 0))


def main() -> None:
    ap = argparse.ArgumentParser(description="The training stream's gaps in a kept trace.")
    ap.add_argument("trace", type=Path, help="bench feed --profile-trace's file (.json or .gz)")
    ap.add_argument("--watch", default="crop", help="name part of the kernel to follow")
    ap.add_argument("--over-us", type=float, default=30.0)
    args = ap.parse_args()
    opener = gzip.open if args.trace.suffix == ".gz" else open
    with opener(args.trace, "rt") as f:
        trace = json.load(f)
    print(json.dumps({"trace": args.trace.name, **gaps(trace, args.watch, args.over_us)}))


if __name__ == "__main__":
    main()
