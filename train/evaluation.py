"""evaluate_checkpoint: clip (3 clips) and video (all windows) accuracy, predictions, confusion."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import ondisk
from train import checkpoint as ck
from train import dist
from train.config import writable_dir, write_json
from train.device import check_gpu_decode, use_device
from train.loop import ClipSource, evaluate
from train.metrics import summarize
from train.report_plots import plot_confusion

log = logging.getLogger(__name__)

EVAL_MODES = ("clip", "video")


def open_eval_loader(cfg, mode: str, overrides: dict[str, Any], device: str = "cpu") -> ClipSource:
    """The DALI loader over the test subset in `mode` (clip: 3 per video; video: every window)."""
    from loader import ClipLoader, LoaderConfig  # lazy: unit tests pass in-memory sources
    from loader.config import clips_on_for

    opts = dict(
        manifests=cfg.manifests, shards=cfg.shards, split=cfg.split, batch_size=cfg.batch_size,
        clip_len=cfg.clip_len, size=cfg.size, decode=cfg.decode, seed=cfg.seed,
        **cfg.loader_options,
    )  # fmt: skip
    if cfg.num_threads is not None:
        opts["num_threads"] = cfg.num_threads
    elif dist.world()[1] > 1:  # the ranks on one machine share its cores
        opts["num_threads"] = dist.threads_per_rank()
    if overrides.get("manifests") is not None and overrides.get("shards") is None:
        opts["shards"] = None  # other manifests: their summary says where their shards are
    opts.update({k: v for k, v in overrides.items() if v is not None})
    opts["batch_size"] = -(-opts["batch_size"] // dist.world()[1])  # a share of it per rank
    opts.setdefault("clips_on", clips_on_for(device, opts["decode"]))  # where the model runs
    opts.setdefault("gpu_last_epoch", 0)  # one pass (epoch 0): NVDEC plans nothing after it
    check_gpu_decode(opts["decode"])
    return ClipLoader(LoaderConfig(subset="test", mode=mode, **opts))


def _sources(source: ClipSource) -> dict[str, str]:
    """key -> original file, from the whole manifest of a DALI loader (every rank's videos);
    empty for in-memory sources and manifests written before the field existed."""
    path = getattr(getattr(source, "cfg", None), "manifest_path", None)
    return {r.key: r.source for r in ondisk.read_manifest(path)} if path is not None else {}


def evaluate_checkpoint(
    ckpt: Path,
    *,
    modes: Sequence[str] = EVAL_MODES,
    out_dir: Path | None = None,
    device: str = "cpu",
    data: dict[str, ClipSource] | None = None,
    loader_overrides: dict[str, Any] | None = None,
    max_steps: int | None = None,
    progress: Callable[[int], None] | None = None,
    windows: str = "full",
) -> dict[str, Any]:
    """Evaluate a checkpoint on the test subset; writes eval.json, predictions_<mode>.json and
    confusion_<mode>.png to out_dir (default: <run dir>/eval-<checkpoint name>) and returns
    the metrics plus the paths written.

    Under paddle.distributed.launch each rank scores its share of the videos and rank 0 writes.
    data maps mode -> clip source (tests; under the launcher: this rank's share); otherwise the
    DALI loader is opened per mode with the checkpoint's data settings, updated by
    loader_overrides (manifests, shards, batch_size...). windows: video mode's "full" windows
    (the paper's protocol) or "hara" (his test loader's, the last partial window loop-padded);
    recorded in eval.json.
    """
    from loader.config import WINDOWS  # a light module: no DALI, no Paddle

    ckpt = Path(ckpt)
    for m in modes:
        if m not in EVAL_MODES:
            raise ValueError(f"unknown eval mode {m!r}; valid: {', '.join(EVAL_MODES)}")
    if windows not in WINDOWS:
        raise ValueError(f"unknown windows {windows!r}; valid: {', '.join(WINDOWS)}")
    use_device(device)
    main = dist.init()[0] == 0  # under the launcher every rank scores its videos, rank 0 writes
    state = ck.load_checkpoint(ckpt)
    cfg = ck.checkpoint_config(state, ckpt)
    classes = list(state["classes"])
    model, _ = ck.model_from_checkpoint(ckpt, len(classes), state)  # weights checked first
    out = Path(out_dir) if out_dir is not None else ckpt.parent / f"eval-{ckpt.stem}"
    if main:
        writable_dir(out)  # now, not after the first pass over the test set
    if data is None and (loader_overrides or {}).get("manifests") is None:
        if not (cfg.manifests / ondisk.summary_name(cfg.split)).is_file():
            raise ck.CheckpointError(
                f"{ckpt}: the data it was trained on is not at {cfg.manifests} any more; "
                "pass --manifests (and --shards) to evaluate on it where it is now"
            )
    result: dict[str, Any] = {
        "checkpoint": str(ckpt), "model": cfg.model, "epoch": int(state["epoch"]),
        "split": cfg.split, "num_classes": len(classes), "windows": windows, "modes": {},
        "files": {},
    }  # fmt: skip
    for mode in modes:
        overrides = {**(loader_overrides or {}), "windows": windows}
        source = (data or {}).get(mode) or open_eval_loader(cfg, mode, overrides, device)
        if list(source.classes) != classes:
            raise ck.CheckpointError(
                f"{ckpt}: trained on {len(classes)} classes, the test data has "
                f"{len(source.classes)} (or other names); evaluate on the split it was trained on"
            )
        ev = evaluate(model, source.epoch(0), max_steps=max_steps, progress=progress)
        ev = dist.gather_eval(ev)  # all ranks' videos, in the order one process scores them
        s = summarize(ev["logits"], ev["labels"], ev["keys"], classes)
        sources = _sources(source) if main else {}
        for p in s["predictions"]:  # the original file name beside the key (HMDB-51's differ)
            if sources.get(p["key"]):
                p["source"] = sources[p["key"]]
        pred_file, png = out / f"predictions_{mode}.json", out / f"confusion_{mode}.png"
        if main:
            write_json(pred_file, {"checkpoint": str(ckpt), "mode": mode,
                                   "videos": s["predictions"]})  # fmt: skip
            png = plot_confusion(
                s["confusion"], classes, png,
                f"{cfg.model} epoch {state['epoch']}, {mode} mode: video top-1 "
                f"{s['video_top1']:.3f}",
            )  # fmt: skip
            np.savetxt(out / f"confusion_{mode}.csv", s["confusion"], fmt="%d", delimiter=",")
        result["modes"][mode] = {
            k: s[k] for k in ("clips", "videos", "clip_top1", "clip_top5", "video_top1",
                              "video_top5", "per_class")
        } | {"loss": ev["loss"], "time_s": ev["time_s"]}  # fmt: skip
        result["files"][mode] = {"predictions": str(pred_file), "confusion_png": str(png)}
        log.info(
            "%s mode: %d clips of %d videos, clip top-1 %.4f, video top-1 %.4f top-5 %.4f",
            mode,
            s["clips"],
            s["videos"],
            s["clip_top1"],
            s["video_top1"],
            s["video_top5"],
        )
    # Headline numbers: clip accuracy from clip mode, video accuracy from video mode (the paper's).
    first = result["modes"][modes[0]]
    result["clip_top1"] = result["modes"].get("clip", first)["clip_top1"]
    result["clip_top5"] = result["modes"].get("clip", first)["clip_top5"]
    result["video_top1"] = result["modes"].get("video", first)["video_top1"]
    result["video_top5"] = result["modes"].get("video", first)["video_top5"]
    result["per_class"] = result["modes"].get("video", first)["per_class"]
    eval_file = out / "eval.json"
    result["files"]["eval"] = str(eval_file)
    if main:
        write_json(eval_file, result)
    return result
