"""Run report: curves.png, the confusion-matrix PNG and report.md, from a run directory's files.

Reads only what `fit` and `evaluate_checkpoint` wrote (config.json, metrics.jsonl,
eval-*/eval.json and confusion_<mode>.csv/.png), so `ucf3d report RUN_DIR` can rebuild it at any
time, e.g. after a later `ucf3d eval`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from train.report_plots import save_figure
from train.rundir import CONFIG_JSON, METRICS_JSONL

log = logging.getLogger(__name__)

REPORT_MD = "report.md"
CURVES_PNG = "curves.png"
EVAL_JSON = "eval.json"
EVAL_PREFERENCE = ("eval-last", "eval-best")  # the final model first: no selection on test groups


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl as a list of per-epoch records (a bad line names file and line)."""
    path = Path(run_dir) / METRICS_JSONL
    records = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: not a JSON line ({e})") from e
    return records


_EVAL_KEYS = ("checkpoint", "model", "epoch", "split", "modes", "clip_top1", "clip_top5",
              "video_top1", "video_top5")  # fmt: skip
_MODE_KEYS = ("clips", "videos", "clip_top1", "clip_top5", "video_top1", "video_top5",
              "per_class", "time_s")  # fmt: skip


def read_eval(path: Path) -> dict[str, Any]:
    """An eval.json written by `ucf3d eval`, checked for what the report reads (errors name it)."""
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable ({e}); run `ucf3d eval` again") from e
    if not isinstance(result, dict) or not isinstance(result.get("modes"), dict):
        raise ValueError(f"{path}: not an eval.json written by `ucf3d eval`; run it again")
    missing = [k for k in _EVAL_KEYS if k not in result]
    missing += [f"modes.{m}.{k}" for m, v in result["modes"].items() for k in _MODE_KEYS
                if not isinstance(v, dict) or k not in v]  # fmt: skip
    if missing:
        raise ValueError(f"{path}: missing {', '.join(missing[:5])}; run `ucf3d eval` again")
    return result


def find_eval(run_dir: Path) -> Path | None:
    """The eval folder to report: eval-last, else eval-best, else the newest eval-*/eval.json."""
    run_dir = Path(run_dir)
    for name in EVAL_PREFERENCE:
        if (run_dir / name / EVAL_JSON).is_file():
            return run_dir / name
    found = sorted(run_dir.glob(f"eval-*/{EVAL_JSON}"), key=lambda p: p.stat().st_mtime)
    return found[-1].parent if found else None


def plot_curves(metrics: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Loss, accuracy and learning rate against epoch in one PNG (atomic write)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str) -> tuple[list[int], list[float]]:
        pts = [(r["epoch"], r[key]) for r in metrics if r.get(key) is not None]
        return [e for e, _ in pts], [v for _, v in pts]

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    panels = (
        ("loss", (("train_loss", "train"), ("val_loss", "validation (test groups)"))),
        ("clip accuracy", (("train_acc", "train"), ("val_acc", "validation (test groups)"))),
        ("learning rate", (("lr", "lr"),)),
    )
    for ax, (name, keys) in zip(axes, panels, strict=True):
        for key, label in keys:
            x, y = series(key)
            if x:
                ax.plot(x, y, marker="o", markersize=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        if name == "learning rate":
            ax.set_yscale("log")
        else:
            ax.legend(fontsize=8)
    axes[1].set_ylim(0, 1)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def confusion_png(eval_dir: Path, result: dict[str, Any], mode: str) -> Path | None:
    """eval's confusion_<mode>.png, regenerated from its .csv when the PNG is missing."""
    png, csv = eval_dir / f"confusion_{mode}.png", eval_dir / f"confusion_{mode}.csv"
    if png.is_file():
        return png
    if not csv.is_file():
        return None
    from train.report_plots import plot_confusion

    cm = np.loadtxt(csv, dtype=np.int64, delimiter=",", ndmin=2)
    classes = list(result["modes"][mode]["per_class"])
    top1 = result["modes"][mode]["video_top1"]
    return plot_confusion(cm, classes, png, f"{result['model']} epoch {result['epoch']}, "
                          f"{mode} mode: video top-1 {top1:.3f}")  # fmt: skip


def build_report(run_dir: Path, eval_dir: Path | None = None) -> Path:
    """Write curves.png and report.md into run_dir (eval results: eval_dir or find_eval)."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_JSON).is_file() or not (run_dir / METRICS_JSONL).is_file():
        raise ValueError(
            f"{run_dir}: not a run directory (no {CONFIG_JSON} and {METRICS_JSONL} from "
            "`ucf3d train`)"
        )
    try:
        cfg = json.loads((run_dir / CONFIG_JSON).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{run_dir / CONFIG_JSON}: unreadable run config ({e})") from e
    metrics = read_metrics(run_dir)
    eval_dir = Path(eval_dir) if eval_dir is not None else find_eval(run_dir)
    result = None
    if eval_dir is not None:
        result = read_eval(eval_dir / EVAL_JSON)
    curves = plot_curves(metrics, run_dir / CURVES_PNG, f"{cfg['model']} on split {cfg['split']}")
    pngs = {}
    for mode in (result or {}).get("modes", {}):
        png = confusion_png(eval_dir, result, mode)
        if png is not None:
            pngs[mode] = png
    text = render_markdown(run_dir, cfg, metrics, result, eval_dir, curves, pngs)
    out = run_dir / REPORT_MD
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    log.info("report: %s (%d epochs%s)", out, len(metrics),
             f", {eval_dir.name}" if eval_dir else ", no evaluation yet")  # fmt: skip
    return out


def _pct(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f} %"


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def _config_rows(cfg: dict[str, Any]) -> list[tuple[str, str]]:
    sched = cfg["schedule"] + (
        f" (milestones {', '.join(map(str, cfg['milestones']))}, gamma {cfg['gamma']})"
        if cfg["schedule"] == "multistep"
        else f" (patience {cfg['patience']}, factor {cfg['gamma']})"
    )
    from train.models import TINY_WIDTHS, WIDTHS

    default = TINY_WIDTHS if cfg["model"] == "tiny" else WIDTHS
    widths = "-".join(map(str, cfg.get("widths") or default))
    rows = [
        ("model", f"{cfg['model']} (widths {widths}, shortcut {cfg['shortcut']})"),
        ("data", f"split {cfg['split']}, {cfg['num_classes']} classes, "
                 f"manifests `{cfg['manifests']}`, "
                 f"shards `{cfg['shards'] or 'shards_dir of the summary'}`"),
        ("clips", f"{cfg['clip_len']} x {cfg['size']} x {cfg['size']}"),
        ("batch size", str(cfg["batch_size"])),
        ("optimiser", f"SGD lr {cfg['lr']}, momentum {cfg['momentum']}, "
                      f"weight decay {cfg['weight_decay']}"),
        ("schedule", sched),
        ("epochs", str(cfg["epochs"])),
        ("device / decode", f"{cfg['device']} / {cfg['decode']}, amp {cfg['amp']}"),
        ("loader threads", str(cfg.get("num_threads") or "all cores")),
        ("seed", str(cfg["seed"])),
    ]  # fmt: skip
    if cfg.get("loader_options"):
        opts = ", ".join(f"{k}={v}" for k, v in sorted(cfg["loader_options"].items()))
        rows.append(("loader options", opts))
    return rows


def render_markdown(
    run_dir: Path,
    cfg: dict[str, Any],
    metrics: list[dict[str, Any]],
    result: dict[str, Any] | None,
    eval_dir: Path | None,
    curves: Path,
    pngs: dict[str, Path],
) -> str:
    """report.md's text: config, final accuracies, per-class accuracy, throughput, epochs, PNGs."""
    lines = [f"# Run report: `{run_dir.name}`", ""]
    lines += ["## Configuration", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in _config_rows(cfg)]
    lines += ["", "## Results", ""]
    if result is None:
        ckpt = f"{_rel(run_dir, Path.cwd())}/last.pdckpt"
        lines += [f"No evaluation yet: run `ucf3d eval --ckpt {ckpt}`, then `ucf3d report`.", ""]
    else:
        lines += _result_lines(run_dir, result, eval_dir, pngs)
    lines += _throughput_lines(metrics, result)
    lines += ["## Curves", "", f"![loss, accuracy and learning rate]({_rel(curves, run_dir)})", ""]
    lines += _epoch_lines(metrics)
    return "\n".join(lines)


def _result_lines(run_dir: Path, result: dict[str, Any], eval_dir: Path,
                  pngs: dict[str, Path]) -> list[str]:  # fmt: skip
    modes = result["modes"]
    lines = [
        f"Checkpoint `{Path(result['checkpoint']).name}` (epoch {result['epoch']}), "
        f"evaluated on the held-out test groups of split {result['split']} "
        f"(`{_rel(eval_dir, run_dir)}/`).",
        "",
        f"**Clip top-1 {_pct(result['clip_top1'])}, video top-1 {_pct(result['video_top1'])}** "
        f"(top-5: clip {_pct(result['clip_top5'])}, video {_pct(result['video_top5'])}).",
        "",
        "| mode | clips | videos | clip top-1 | clip top-5 | video top-1 | video top-5 |",
        "|---|---|---|---|---|---|---|",
    ]
    about = {"clip": "clip (3 clips per video)", "video": "video (every 16-frame window)"}
    if result.get("windows") == "hara":
        about["video"] = "video (every 16-frame window, the last one loop-padded as in Hara's code)"
    for mode, m in modes.items():
        lines.append(
            f"| {about.get(mode, mode)} | {m['clips']} | {m['videos']} | {_pct(m['clip_top1'])} "
            f"| {_pct(m['clip_top5'])} | {_pct(m['video_top1'])} | {_pct(m['video_top5'])} |"
        )
    lines += ["", "### Per-class video accuracy", "",
              "| class | " + " | ".join(f"{m} mode" for m in modes) + " |",
              "|---|" + "---|" * len(modes)]  # fmt: skip
    first = next(iter(modes.values()))
    for cls in first["per_class"]:
        cells = " | ".join(_pct(m["per_class"].get(cls)) for m in modes.values())
        lines.append(f"| {cls} | {cells} |")
    lines.append("")
    for mode, png in pngs.items():
        lines += [f"![confusion matrix, {mode} mode]({_rel(png, run_dir)})", ""]
    return lines


def _throughput_lines(metrics: list[dict[str, Any]], result: dict[str, Any] | None) -> list[str]:
    if not metrics:
        return ["## Throughput", "", "No epoch finished yet.", ""]
    steady = metrics[1:] or metrics  # the first epoch includes loader start-up
    train_s = sum(r.get("train_time_s", 0.0) for r in metrics)
    total_s = sum(r.get("time_s", 0.0) for r in metrics)
    lines = [
        "## Throughput",
        "",
        "| | value |",
        "|---|---|",
        f"| training clips/s (mean of epochs 2+) | "
        f"{_mean([r['train_clips_per_s'] for r in steady]):.1f} |",
        f"| data wait (share of training time) | "
        f"{_mean([r['train_data_wait_pct'] for r in steady]):.1f} % |",
        f"| training time | {train_s:.0f} s over {len(metrics)} epochs |",
        f"| training + validation time | {total_s:.0f} s |",
    ]
    stolen = [r["train_host_steal_pct"] for r in steady if "train_host_steal_pct" in r]
    if stolen:  # a hypervisor that pauses the CPUs slows training whatever the settings
        lines.append(f"| CPU time taken by the hypervisor (epochs 2+, largest) | "
                     f"{max(stolen):.1f} % of the busy time |")  # fmt: skip
    for mode, m in (result or {}).get("modes", {}).items():
        if m.get("time_s"):
            lines.append(f"| evaluation, {mode} mode | {m['clips'] / m['time_s']:.1f} clips/s "
                         f"({m['time_s']:.0f} s) |")  # fmt: skip
    return [*lines, ""]


def _epoch_lines(metrics: list[dict[str, Any]]) -> list[str]:
    head = "| epoch | lr | train loss | train acc | val loss | val clip acc | clips/s | data wait |"
    lines = ["## Epochs", "", head, "|---|---|---|---|---|---|---|---|"]

    def num(r: dict[str, Any], k: str, fmt: str) -> str:
        return format(r[k], fmt) if r.get(k) is not None else "–"

    for r in metrics:
        lines.append(
            f"| {r['epoch']} | {num(r, 'lr', '.2g')} | {num(r, 'train_loss', '.3f')} "
            f"| {_pct(r.get('train_acc'))} | {num(r, 'val_loss', '.3f')} "
            f"| {_pct(r.get('val_acc'))} "
            f"| {num(r, 'train_clips_per_s', '.1f')} | {num(r, 'train_data_wait_pct', '.0f')} % |"
        )
    return [*lines, ""]
