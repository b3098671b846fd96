"""Accuracy from scores: clip and video top-k, per-video softmax averaging, per-class, confusion."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:  # (N, K) -> (N, K), rows sum to 1
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def topk_correct(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(N,) bool: label among the k highest scores (ties broken by lower class index)."""
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # (N, k)
    return (top == np.asarray(labels)[:, None]).any(axis=1)


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    if len(labels) == 0:
        return float("nan")
    return float(topk_correct(scores, labels, k).mean())


def average_per_video(
    logits: np.ndarray, labels: np.ndarray, keys: Sequence[str]
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Mean softmax over each video's clips, videos in first-seen order.

    Returns (keys, scores (V, K), labels (V,), clips per video (V,)). Every key is kept: Hara's
    test.py only scored a video when the next one began, so the last video was dropped.
    """
    probs = softmax(np.asarray(logits))
    labels = np.asarray(labels)
    index: dict[str, int] = {}
    for key in keys:
        index.setdefault(key, len(index))
    inv = np.fromiter((index[k] for k in keys), dtype=np.int64, count=len(keys))
    sums = np.zeros((len(index), probs.shape[1]))
    np.add.at(sums, inv, probs)
    counts = np.bincount(inv, minlength=len(index))
    video_labels = np.full(len(index), -1, dtype=np.int64)
    video_labels[inv] = labels
    if not (video_labels[inv] == labels).all():
        bad = next(k for k, y in zip(keys, labels, strict=True) if video_labels[index[k]] != y)
        raise ValueError(f"clips of video {bad} carry different labels")
    return list(index), sums / counts[:, None], video_labels, counts


def confusion_matrix(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) counts: row = true class, column = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels), np.asarray(pred)), 1)
    return cm


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """(K,) recall per true class from a confusion matrix; NaN for classes with no samples."""
    totals = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(cm) / np.maximum(totals, 1), np.nan)


def summarize(
    logits: np.ndarray, labels: np.ndarray, keys: Sequence[str], classes: Sequence[str]
) -> dict:
    """Clip-level and video-level top-1/top-5, per-class accuracy and per-video predictions."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    vkeys, vscores, vlabels, counts = average_per_video(logits, labels, keys)
    pred = vscores.argmax(axis=1)
    cm = confusion_matrix(pred, vlabels, len(classes))
    pc = per_class_accuracy(cm)
    top5 = np.argsort(-vscores, axis=1, kind="stable")[:, :5]
    videos = [
        {
            "key": k,
            "label": int(y),
            "class": classes[y],
            "pred": int(p),
            "pred_class": classes[p],
            "correct": bool(p == y),
            "clips": int(n),
            "top5": [[classes[c], round(float(s[c]), 6)] for c in t],
        }
        for k, y, p, n, s, t in zip(vkeys, vlabels, pred, counts, vscores, top5, strict=True)
    ]
    return {
        "clips": len(labels),
        "videos": len(vkeys),
        "clip_top1": topk_accuracy(logits, labels, 1),
        "clip_top5": topk_accuracy(logits, labels, 5),
        "video_top1": topk_accuracy(vscores, vlabels, 1),
        "video_top5": topk_accuracy(vscores, vlabels, 5),
        "per_class": {
            c: (None if np.isnan(a) else float(a)) for c, a in zip(classes, pc, strict=True)
        },
        "confusion": cm,
        "predictions": videos,
    }


def clip_scores(logits: np.ndarray, labels: np.ndarray, keys: list[str], time_s: float) -> dict:
    """evaluate()'s result: mean cross-entropy and top-1 accuracy of (N, K) logits against (N,)
    int labels, with the logits, labels and video keys themselves."""
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    return {
        "loss": float(-logp[np.arange(len(labels)), labels].mean()),
        "acc": float((logits.argmax(1) == labels).mean()),
        "logits": logits,
        "labels": labels,
        "keys": keys,
        "time_s": time_s,
    }
