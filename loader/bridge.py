"""DALI outputs -> paddle.Tensor through DLPack (zero-copy; DALI's Paddle plugin needs a GPU)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import paddle


def to_paddle(output: Any, n: int | None = None) -> paddle.Tensor:
    """A dense DALI TensorList / Tensor (CPU or GPU) as a paddle.Tensor sharing its memory.

    DALI TensorLists have no `__dlpack__`; their `.as_tensor()` view of a uniform batch does.
    With DALI's default (dynamic) executor the buffer lives as long as a reference to it does, so
    the Paddle tensor stays valid after the pipeline moves on.

    Paddle is imported here, on first use, so the loader runs (and benchmarks) without it.
    A list of outputs (the GPU backend's per-pipeline chunks of one batch) is concatenated on the
    device; `n` keeps the first n samples (a batch's last chunk may be padded).
    """
    import paddle

    if isinstance(output, list):
        parts = [to_paddle(o) for o in output]
        tensor = parts[0] if len(parts) == 1 else paddle.concat(parts, axis=0)
    else:
        if not hasattr(output, "__dlpack__") and hasattr(output, "as_tensor"):
            output = output.as_tensor()
        tensor = paddle.utils.dlpack.from_dlpack(output)
    return tensor if n is None or tensor.shape[0] == n else tensor[:n]


def labels_to_paddle(labels: np.ndarray) -> paddle.Tensor:
    """int64 (N,) labels on the CPU (the training loop moves them with the clips)."""
    import paddle

    return paddle.to_tensor(np.asarray(labels, np.int64))
