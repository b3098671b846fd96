"""Run `ucf3d bench feed` (or `bench loader`) once per line of a plan file; collect the JSON lines.

    python bench/sweep.py PLAN OUT.jsonl [--timeout 120] [-- OPTIONS FOR EVERY RUN]

Each non-empty, non-# line of PLAN is `<label> [NAME=VALUE ...] <bench command> <options...>`,
for example `side-u8 feed --manifests M --split 1`; NAME=VALUE words before the command are
environment variables for that run only (e.g. CUDA_DEVICE_MAX_CONNECTIONS=32). Runs go one after
another (never two at once: they would share the GPU and the cores), each in its own process under
a timeout, so one that hangs or fails is recorded as such and the rest still run. Every result line
gets the label, the command and the commit; a compact summary goes to stdout as each run ends.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _commit() -> str:
    """HEAD of this checkout; $UCF3D_COMMIT where the tree travelled without its .git."""
    if os.environ.get("UCF3D_COMMIT"):
        return os.environ["UCF3D_COMMIT"]
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True)  # fmt: skip
    return out.stdout.strip() or "unknown"


def _summary(r: dict) -> str:
    if r.get("bench") == "feed":
        f, u = r["fed"], r["unfed"]
        part = r.get("unfed_partitioned")
        alone = f" (partition alone {part['clips_per_s']})" if part else ""
        alone += " [unfed reused]" if r.get("unfed_reused") else ""
        return (f"{r['label']}: fed {f['clips_per_s']} / unfed {u['clips_per_s']}{alone} = "
                f"{r['fed_vs_unfed']}, wait {f['data_wait_pct']} %, "
                f"NVDEC {f.get('nvdec_util_mean')} %, SM {f.get('sm_util_mean')} %, "
                f"cores {f['cpu_cores_used']}{_host(f)}")  # fmt: skip
    if r.get("bench") == "loader":
        return f"{r['label']}: loader alone {r['clips_per_s']} clips/s"
    return f"{r['label']}: {r.get('error', r)}"


def _host(phase: dict) -> str:
    h = phase.get("host_ms_per_step")
    if not h:
        return ""
    d = phase.get("device_ms_per_step")
    on_device = f"; device ms/step: step {d['step']}, between {d['between']}" if d else ""
    if d and "step_max" in d:  # the longest of each: one stall, or all steps slower
        on_device += f" (longest {d['step_max']} / {d['between_max']})"
    if d and "between_pct" in d:
        on_device += f", {d['between_pct']} % between"
    hybrid = phase.get("hybrid_wait_s")
    waits = f"; hybrid waited GPU {hybrid['gpu']} s, CPU {hybrid['cpu']} s" if hybrid else ""
    shares = phase.get("hybrid_shares")  # share -> epochs planned with it
    waits += f", CPU shares {shares}" if shares else ""
    seg = phase.get("nvdec_segments")
    if seg:
        built = ", ".join(
            f"{b['clips']} clips {b['build_s']} s" + (" bg" if b["background"] else "")
            for b in seg["segments"]
        )
        waits += f"; NVDEC segments [{built}], boundaries {seg['switch_s']} s, "
        waits += f"shut-downs {seg['retire_s']} s"
    taken = phase.get("host_taken", {})
    if "steal_pct" in taken:  # the hypervisor's share of the machine's busy CPU time
        waits += f"; steal {taken['steal_pct']} %"
    return (f", host ms/step: data {h['data']} ({h['data_cpu']} CPU), "
            f"launch {h['launch']} ({h['launch_cpu']} CPU), fence {h['fence']}"
            f"{on_device}{waits}")  # fmt: skip


def split_env(words: list[str]) -> tuple[dict[str, str], list[str]]:
    """Leading NAME=VALUE words (environment for one run) and the bench command after them."""
    env: dict[str, str] = {}
    i = 0
    while i < len(words) and "=" in words[i] and not words[i].startswith("-"):
        name, _, value = words[i].partition("=")
        if not name.isidentifier():
            raise ValueError(f"{words[i]!r}: not NAME=VALUE before the bench command")
        env[name] = value
        i += 1
    return env, words[i:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("plan", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--timeout", type=float, default=120)
    a, common = ap.parse_known_args()  # the rest (after --): options added to every run
    common = [c for c in common if c != "--"]
    commit = _commit()
    for line in a.plan.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        label, *words = shlex.split(line)
        extra, args = split_env(words)
        env = {**os.environ, **extra}
        cmd = [sys.executable, str(ROOT / "cli.py"), "bench", *args, *common]
        t0 = time.time()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout, env=env)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode == 0 and lines:
                r = json.loads(lines[-1])
            else:
                r = {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-800:]}"}
        except subprocess.TimeoutExpired:
            r = {"error": f"timed out after {a.timeout} s"}
        words = [f"{k}={v}" for k, v in extra.items()] + ["ucf3d", "bench", *args, *common]
        r.update(label=label, command=" ".join(words),
                 commit=commit, run_s=round(time.time() - t0, 1))  # fmt: skip
        with a.out.open("a") as f:
            f.write(json.dumps(r) + "\n")
        print(_summary(r), flush=True)


if __name__ == "__main__":
    main()
