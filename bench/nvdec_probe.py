"""NVDEC design probe: `readers.video(device="gpu")` with one file-list line per clip.

    OUT=/tmp/out python bench/nvdec_probe.py [build|rate|all]     # on a GPU machine with DALI

Copies a few VP9 test videos (`bench/nvdec_probe.py` expects them in a `vids/` folder beside it:
`src_g8_*.webm`, `src_g16_*.webm`, 170x128, 175 frames, e.g. made with ffmpeg's testsrc2 + noise)
to N_FILES files, then times pipelines x batch, GOP and start alignment with a stand-in crop. It
measured the design choices recorded in docs/BENCHMARKS.md ("How the design came from
measurements"); it excludes pipeline start-up, which the real loader must pay (see there).
"""
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from nvidia.dali import fn, pipeline_def, types

OUT = Path(os.environ.get("OUT", "/tmp/out"))
SRC = Path(__file__).parent / "vids"
WORK = Path("/tmp/probe")
N_FILES = int(os.environ.get("N_FILES", "2400"))
NF = 175


def make_files(tag):
    d = WORK / tag
    d.mkdir(parents=True, exist_ok=True)
    srcs = sorted(SRC.glob(f"src_{tag}_*.webm"))
    files = []
    for i in range(N_FILES):
        p = d / f"v{i:05d}.webm"
        if not p.exists():
            shutil.copy(srcs[i % len(srcs)], p)
        files.append(p)
    return files


def write_list(path, files, starts):
    with open(path, "w") as f:
        for i, (p, s) in enumerate(zip(files, starts, strict=True)):
            f.write(f"{p} {i} {s} {s + 16}\n")


@pipeline_def
def vpipe(file_list, aug):
    frames, label = fn.readers.video(
        device="gpu", file_list=file_list, file_list_frame_num=True, sequence_length=16,
        random_shuffle=False, name="r", dtype=types.UINT8, pad_last_batch=False,
    )
    if aug:
        # stand-in for Hara's multi-scale corner crop: random-size square crop, resize, flip
        crop = fn.random.uniform(range=[64.0, 128.0])
        frames = fn.crop(frames, crop_h=crop, crop_w=crop,
                         crop_pos_x=fn.random.uniform(range=[0.0, 1.0]),
                         crop_pos_y=fn.random.uniform(range=[0.0, 1.0]))
        frames = fn.resize(frames, resize_x=112, resize_y=112)
        frames = fn.crop_mirror_normalize(
            frames, dtype=types.FLOAT16, output_layout="CFHW",
            mean=[114.77, 107.74, 99.48], std=[1.0, 1.0, 1.0],
            mirror=fn.random.coin_flip())
    return frames, label


def build(lists, bs, threads, aug):
    pipes = [vpipe(file_list=str(lst), aug=aug, batch_size=bs, num_threads=threads, device_id=0,
                   seed=1 + i, prefetch_queue_depth=2) for i, lst in enumerate(lists)]
    t0 = time.time()
    ths = [threading.Thread(target=p.build) for p in pipes]
    [t.start() for t in ths]
    [t.join() for t in ths]
    return pipes, time.time() - t0


def run(pipes, n_iter):
    n = 0
    t0 = None
    for it in range(n_iter):
        for p in pipes:
            out = p.run()
            n += len(out[0])
        if it == 1:
            n = 0
            t0 = time.time()
    import cupy  # only on the GPU machine: synchronise the device
    cupy.cuda.runtime.deviceSynchronize()
    return n / (time.time() - t0)


def case(tag, n_pipes, bs, align, aug, epochs=1, threads=2):
    files = make_files(tag)
    per = len(files) // n_pipes
    lists = []
    rng = random.Random(0)
    for k in range(n_pipes):
        fs = files[k * per:(k + 1) * per] * epochs
        if align == 0:
            starts = [rng.randrange(0, NF - 16 + 1) for _ in fs]
        else:
            starts = [align * rng.randrange(0, (NF - 16) // align + 1) for _ in fs]
        lp = WORK / f"list_{tag}_{k}.txt"
        write_list(lp, fs, starts)
        lists.append(lp)
    pipes, tbuild = build(lists, bs, threads, aug)
    iters = (per * epochs) // bs - 1
    stop = threading.Event()
    smi = OUT / f"smi_{tag}_{n_pipes}_{bs}_{align}_{aug}_{epochs}.csv"
    th = threading.Thread(target=smi_sampler, args=(stop, smi))
    th.start()
    rate = run(pipes, min(iters, 60))
    stop.set()
    th.join()
    u = np.loadtxt(smi, delimiter=",", ndmin=2)
    u = u[len(u) // 4:] if len(u) > 4 else u
    res = dict(tag=tag, pipes=n_pipes, bs=bs, align=align, aug=aug, lines_per_pipe=per * epochs,
               build_s=round(tbuild, 2), clips_s=round(rate, 1),
               nvdec=float(u[:, 0].mean()) if u.size else -1,
               sm=float(u[:, 1].mean()) if u.size else -1)
    print(json.dumps(res), flush=True)
    with open(OUT / "probe.jsonl", "a") as f:
        f.write(json.dumps(res) + "\n")
    del pipes


def smi_sampler(stop, path):
    with open(path, "w") as f:
        p = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.decoder,utilization.gpu",
                              "--format=csv,noheader,nounits", "-lms", "250"], stdout=f)
        stop.wait()
        p.terminate()


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    if which in ("build", "all"):
        case("g8", 16, 16, 8, False, epochs=1)
        case("g8", 16, 16, 8, False, epochs=8)
    if which in ("rate", "all"):
        for tag, align in (("g8", 8), ("g8", 0), ("g16", 16), ("g16", 0), ("g16", 8)):
            case(tag, 16, 16, align, True, epochs=4)
        case("g8", 24, 16, 8, True, epochs=6)
        case("g8", 32, 8, 8, True, epochs=4)
