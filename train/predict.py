"""Predict the action in a raw video with an exported model: top-k class names and probabilities."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from train.config import sha256_file
from train.device import use_device
from train.export import META, PREFIX
from train.metrics import softmax
from train.preprocess import video_clips


def load_meta(model_dir: Path) -> dict[str, Any]:
    path = Path(model_dir) / META
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; export a model with `ucf3d export` first")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg}); export the model again") from e
    for key in ("classes", "clip_len", "size", "short_side", "mean", "std"):
        if key not in meta:
            raise ValueError(f"{path}: missing {key!r}; export the model again")
    return meta


class Predictor:
    """paddle.inference predictor over DIR/model.json (or .pdmodel) + DIR/model.pdiparams."""

    def __init__(self, model_dir: Path, device: str = "cpu", threads: int = 2) -> None:
        import paddle.inference as pi

        model_dir = Path(model_dir)
        self.meta = load_meta(model_dir)
        params = model_dir / f"{PREFIX}.pdiparams"
        program = next(
            (
                p
                for p in (model_dir / f"{PREFIX}.json", model_dir / f"{PREFIX}.pdmodel")
                if p.is_file()
            ),
            None,
        )
        if program is None or not params.is_file():
            raise FileNotFoundError(f"{model_dir}: model files missing; export the model again")
        for name, digest in self.meta.get("files", {}).items():  # older exports have none
            f = model_dir / name
            if not f.is_file() or sha256_file(f) != digest:
                raise ValueError(
                    f"{f}: does not match {META} (sha256): missing, truncated, changed or from "
                    "another export; export the model again"
                )
        config = pi.Config(str(program), str(params))
        if device == "gpu":
            use_device("gpu")  # a clear error on CPU-only Paddle builds
            config.enable_use_gpu(256, 0)
        else:
            config.disable_gpu()
            config.set_cpu_math_library_num_threads(threads)
        config.disable_glog_info()
        self.model_dir = model_dir
        try:  # Paddle's C++ raises many types, and names no file
            self.predictor = pi.create_predictor(config)
            self.input = self.predictor.get_input_handle(self.predictor.get_input_names()[0])
            self.output = self.predictor.get_output_handle(self.predictor.get_output_names()[0])
        except Exception as e:
            raise self._error(e) from e

    def _error(self, e: Exception) -> ValueError:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        return ValueError(
            f"{self.model_dir}: the exported model does not load or run ({first}); "
            "export the model again"
        )

    def logits(self, clips: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """(N, 3, T, S, S) float32 -> (N, classes) logits, in batches."""
        out = []
        for i in range(0, len(clips), batch_size):
            x = np.ascontiguousarray(clips[i : i + batch_size], dtype=np.float32)
            try:
                self.input.reshape(list(x.shape))
                self.input.copy_from_cpu(x)
                self.predictor.run()
                out.append(self.output.copy_to_cpu())
            except Exception as e:  # e.g. parameters of another model: shapes do not fit
                raise self._error(e) from e
        return np.concatenate(out)


def predict_video(
    video: Path, model_dir: Path, topk: int = 5, device: str = "cpu", threads: int = 2
) -> dict[str, Any]:
    """Softmax averaged over every non-overlapping window (video-mode eval) -> top-k classes."""
    pred = Predictor(model_dir, device, threads)
    m = pred.meta
    clips = video_clips(
        Path(video),
        m["clip_len"],
        m["size"],
        m["short_side"],
        m["mean"],
        m["std"],
        m.get("fps", 25),
    )
    logits = pred.logits(clips)  # (N, classes)
    if logits.shape[1:] != (len(m["classes"]),) or not np.isfinite(logits).all():
        raise ValueError(
            f"{model_dir}: the model gave {logits.shape[1:]} logits for {len(m['classes'])} "
            f"classes{'' if np.isfinite(logits).all() else ', with NaN or inf'}; export it again"
        )
    probs = softmax(logits).mean(axis=0)  # (classes,)
    order = np.argsort(-probs, kind="stable")[:topk]
    return {
        "video": str(video),
        "windows": len(clips),
        "top": [(m["classes"][i], float(probs[i])) for i in order],
        "logits": logits,
    }
