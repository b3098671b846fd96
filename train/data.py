"""An in-memory clip source with the loader's interface, for unit tests and runs without DALI."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import paddle


@dataclass
class Batch:
    clips: paddle.Tensor  # (N, 3, T, H, W) float32
    labels: paddle.Tensor  # (N,) int64
    keys: list[str]


class ArrayClips:
    """Clips held as numpy arrays; `epoch(i)` yields batches, shuffled by (seed, i) when asked."""

    def __init__(
        self,
        clips: np.ndarray,  # (M, 3, T, H, W)
        labels: Sequence[int],
        classes: Sequence[str],
        batch_size: int,
        keys: Sequence[str] | None = None,
        shuffle: bool = False,
        seed: int = 0,
    ) -> None:
        self.clips = np.asarray(clips, dtype=np.float32)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.keys = list(keys) if keys is not None else [f"clip{i:05d}" for i in range(len(clips))]
        self.classes = list(classes)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def epoch(self, index: int) -> Iterator[Batch]:
        order = np.arange(len(self.labels))
        if self.shuffle:
            order = np.random.default_rng((self.seed, index)).permutation(order)
        for i in range(0, len(order), self.batch_size):
            idx = order[i : i + self.batch_size]
            yield Batch(
                paddle.to_tensor(self.clips[idx]),
                paddle.to_tensor(self.labels[idx]),
                [self.keys[j] for j in idx],
            )


def random_clips(
    n: int, num_classes: int, clip_len: int = 16, size: int = 32, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Learnable noise: each class adds its own fixed pattern to Gaussian noise."""
    rng = np.random.default_rng(seed)
    patterns = rng.normal(0, 1, (num_classes, 3, clip_len, size, size)).astype(np.float32)
    labels = np.arange(n) % num_classes
    clips = rng.normal(0, 1, (n, 3, clip_len, size, size)).astype(np.float32) + patterns[labels]
    return clips, labels
