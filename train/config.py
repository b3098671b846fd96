"""TrainConfig: the frozen, resolved training configuration kept beside every run and checkpoint."""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from loader.greenctx import STEP_STREAMS, default_loader_sms
from train.models import DEPTHS, SHORTCUTS, default_shortcut, model_name

SCHEDULES = ("plateau", "multistep")
AMP_MODES = ("none", "fp16", "bf16")
DEVICES = ("cpu", "gpu")
DECODES = ("cpu", "gpu", "hybrid")
MEAN = (114.77, 107.74, 99.48)  # Hara's ActivityNet mean on 0-255 RGB, the loader's default
STD = (1.0, 1.0, 1.0)

# Fields that define what a run *is*: a run directory or checkpoint that differs in one of these
# holds a different run. The rest (epochs, logging, devices, threads) may change on --resume.
IDENTITY_FIELDS = (
    "model", "shortcut", "widths", "num_classes", "split", "clip_len", "size", "batch_size",
    "lr", "momentum", "weight_decay", "schedule", "patience", "milestones", "gamma", "seed", "amp",
    "val_from_train",
)  # fmt: skip


@dataclass(frozen=True)
class TrainConfig:
    """Hara et al. CVPR 2018 defaults; num_classes None = read from the split summary."""

    model: str = "r3d18"  # registry name (train.models.MODELS)
    shortcut: str | None = None  # None -> the depth's default (train.models.default_shortcut)
    widths: tuple[int, ...] | None = None  # None = 64-128-256-512 (tiny: 8-16-32-64)
    num_classes: int | None = None
    manifests: Path = Path("manifests")  # stored absolute: eval and resume work from anywhere
    shards: Path | None = None  # None: the split summary's shards_dir (where `shard` wrote them)
    split: int = 1
    clip_len: int = 16
    size: int = 112
    batch_size: int = 128
    # Hara: lr 0.1, momentum 0.9, dampening 0.9 in PyTorch. Paddle's Momentum has no dampening;
    # PyTorch's step lr*(1-d)*(g + wd*w) equals Paddle's step at lr 0.01 with the same L2 decay.
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-3
    schedule: str = "plateau"  # ReduceLROnPlateau on validation loss, as in Hara's main.py
    patience: int = 10
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    epochs: int = 200
    device: str = "cpu"
    decode: str = "cpu"
    amp: str = "none"
    compile: bool = False  # paddle.jit.to_static on the model (not part of the run's identity)
    step_stream: str = "side"  # GPU steps: loader.greenctx.STEP_STREAMS
    # GPU: SMs the step leaves to the loader (a green context holds the rest; loader.greenctx);
    # None = auto: loader.greenctx.default_loader_sms (2 with NVDEC decoding on the side stream,
    # else 0); 0 = off
    loader_sms: int | None = None
    sync_bn: bool = False  # BatchNorm statistics over all ranks (GPU); Hara's were per GPU
    checkpoint_every: int = 10
    val_every: int = 1
    # 0: validate (and pick best.pdckpt) on the test split, as Hara did; f in (0, 1): on this
    # fraction of the training groups, held out of training (loader.source.held_out_groups)
    val_from_train: float = 0.0
    log_every: int = 10
    max_steps: int | None = None  # per epoch; None = the whole epoch (short runs for demos/tests)
    max_val_steps: int | None = None
    seed: int = 1
    num_threads: int | None = None  # loader decode threads; None = the loader default (all cores)
    run_dir: Path = Path("runs/r3d18_split1")
    loader_options: dict[str, Any] = field(default_factory=dict)  # more LoaderConfig fields

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", model_name(self.model))
        if self.shortcut is None:
            object.__setattr__(self, "shortcut", default_shortcut(self.model))
        for name, choices in (("schedule", SCHEDULES), ("amp", AMP_MODES), ("device", DEVICES),
                              ("decode", DECODES), ("shortcut", SHORTCUTS),
                              ("step_stream", STEP_STREAMS)):  # fmt: skip
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        if self.loader_sms is not None:
            if self.loader_sms < 0:
                raise ValueError(f"loader_sms must be >= 0, got {self.loader_sms}")
            if self.loader_sms and (self.device != "gpu" or self.step_stream == "default"):
                raise ValueError("loader_sms needs device 'gpu' and a side step stream")
        if self.schedule == "multistep" and not self.milestones:
            raise ValueError("schedule 'multistep' needs milestones (epochs at which lr *= gamma)")
        for name in ("batch_size", "epochs", "checkpoint_every", "val_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.val_from_train < 1:
            raise ValueError(f"val_from_train must be in [0, 1), got {self.val_from_train}")
        for name, lo, hi in (("lr", 0, math.inf), ("momentum", 0, 1), ("weight_decay", 0, math.inf),
                             ("gamma", 0, 1)):  # fmt: skip
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and lo <= v <= hi):
                raise ValueError(f"{name} must be a finite number in [{lo}, {hi}], got {v!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        ms = tuple(self.milestones)
        if any(int(m) < 1 for m in ms) or list(ms) != sorted(set(ms)):
            raise ValueError(f"milestones must be increasing epochs >= 1, got {list(ms)}")
        if self.size < 32 or self.clip_len < 1:
            raise ValueError(f"clips must be at least 1x32x32, got {self.clip_len}x{self.size}")
        object.__setattr__(self, "run_dir", Path(self.run_dir))
        for name in ("manifests", "shards"):  # resolved, so a run does not depend on its cwd
            v = getattr(self, name)
            object.__setattr__(self, name, None if v is None else Path(v).resolve())
        for name in ("widths", "milestones"):
            v = getattr(self, name)
            object.__setattr__(self, name, None if v is None else tuple(int(x) for x in v))

    def steps_loader_sms(self) -> int:
        """SMs the training steps leave to the loader: loader_sms, or the automatic choice."""
        if self.loader_sms is not None:
            return self.loader_sms
        return default_loader_sms(self.device, self.decode, self.step_stream)

    @property
    def depth(self) -> int | None:
        d = self.model.removeprefix("r3d")
        return int(d) if d.isdigit() and int(d) in DEPTHS else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, Path):
                d[k] = str(v)
            elif isinstance(v, tuple):
                d[k] = list(v)
        d["loader_options"] = json.loads(json.dumps(d["loader_options"], default=str))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def identity(self) -> dict[str, Any]:
        d = self.to_dict()
        return {k: d[k] for k in IDENTITY_FIELDS}

    def differences(self, other: TrainConfig) -> list[str]:
        """`field: ours != theirs` for every identity field that differs."""
        a, b = self.identity(), other.identity()
        if a["num_classes"] is None or b["num_classes"] is None:  # None: "whatever the data has"
            a["num_classes"] = b["num_classes"] = None
        return [f"{k}: {a[k]!r} != {b[k]!r}" for k in IDENTITY_FIELDS if a[k] != b[k]]

    def replace(self, **changes: Any) -> TrainConfig:
        return replace(self, **changes)


def write_json(path: Path, obj: Any) -> None:
    """Atomic JSON write: tmp file in the same directory, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # NaN and Infinity are not JSON: never write them
        text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"
    except ValueError as e:
        raise ValueError(f"{path}: not written, the values hold NaN or infinity ({e})") from e
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def writable_dir(path: Path) -> Path:
    """Create `path` if needed and check that a file can be written in it, before any long work;
    an OSError naming it if not (a read-only folder would otherwise fail deep in a library)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".ucf3d-write-test-"):
            pass
    except OSError as e:
        raise OSError(f"{path}: cannot write there ({e.strerror or e})") from e
    return path


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
