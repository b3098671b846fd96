"""`ucf3d` for the distributed tests: the CLI plus a BatchNorm-free tiny model, `tinynobn`.

Started by paddle.distributed.launch (tests/test_dist.py). Per-rank BatchNorm statistics
legitimately make 2 ranks x B/2 differ from 1 process x B, and Paddle has no CPU kernel for
SyncBatchNorm, so the weight-equality tests train a model without BatchNorm.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's modules

import paddle.nn as nn  # noqa: E402

from train import models  # noqa: E402


def tiny_without_bn(num_classes: int = 400, shortcut: str | None = None, widths=None):
    """resnet3d_tiny with every BatchNorm3D replaced by an identity."""
    model = models.resnet3d_tiny(num_classes, shortcut, widths)
    _strip_bn(model)
    return model


def _strip_bn(layer: nn.Layer) -> None:
    for name, child in layer.named_children():
        if isinstance(child, nn.BatchNorm3D):
            setattr(layer, name, nn.Identity())
        else:
            _strip_bn(child)


if __name__ == "__main__":
    import cli

    models.MODELS["tinynobn"] = tiny_without_bn

    cli.main()
