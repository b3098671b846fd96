"""Paddle 3D-ResNet family, training loop, evaluation, export and predict."""

import warnings

from train.install import require_paddle

# Paddle is not a core dependency (train/install.py): without it, say so in one line, naming the
# CPU and the CUDA distribution, before any module below fails on `import paddle`.
require_paddle()

# Paddle warns on every import that no C++ compiler cache exists, and on every BatchNorm forward in
# training mode that it tracks running statistics; neither concerns users of this package.
warnings.filterwarnings("ignore", message="No ccache found")
warnings.filterwarnings("ignore", message="When training, we now always track global mean")

# The entry points other stages (cli, the demo) call, imported lazily: `import train` stays cheap.
_EXPORTS = {
    "TrainConfig": "train.config",
    "fit": "train.run",
    "evaluate_checkpoint": "train.evaluation",
    "export_checkpoint": "train.export",
    "predict_video": "train.predict",
    "create_model": "train.models",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'train' has no attribute {name!r}")
