"""LoaderConfig: the one frozen, validated description of what a ClipLoader produces."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ondisk

from .staging import HANDOVER_STREAMS

MODES = ("train", "clip", "video")  # train: random clip + Hara aug; clip/video: the two eval modes
DECODES = ("cpu", "gpu", "hybrid")  # hybrid: NVDEC plus CPU threads decoding a share of each batch
OUTPUTS = ("float", "uint8")  # normalised by DALI, or raw uint8 normalised by the consumer
CLIPS_ON = ("host", "gpu")  # where the clips are handed over
HANDOVERS = ("kernel", "ops")  # how a GPU consumer normalises uint8 clips (loader.handover)
GPU_RESIZES = ("auto", "dali", "kernel")  # who crops and resizes NVDEC's frames (loader.handover)
DTYPES = ("float32", "float16")
WINDOWS = ("full", "hara")  # video mode: whole windows only, or also Hara's loop-padded last one
PARTS = ("all", "kept", "held")  # of a subset with `holdout`: everything, the rest, the held out
# Hara et al.: initial_scale 1, n_scales 5, scale_step 2**-0.25
HARA_SCALES = (1.0, 2**-0.25, 2**-0.5, 2**-0.75, 0.5)
ACTIVITYNET_MEAN = (114.77, 107.74, 99.48)  # on 0-255 RGB; CVPR 2018 recipe: no std division


def _default_threads() -> int:
    return os.cpu_count() or 1


@dataclass(frozen=True)
class LoaderConfig:
    """What to load and how. `manifests` is the folder holding split{N}_{subset}.jsonl."""

    manifests: Path
    split: int = 1
    subset: str = "train"  # which manifest: "train" or "test"
    mode: str = "train"  # "train" | "clip" | "video"
    shards: Path | None = None  # default: the summary's shards_dir
    batch_size: int = 128
    clip_len: int = ondisk.CLIP_LEN
    size: int = 112
    decode: str = "cpu"  # "cpu" (DALI/libavcodec, VP9 only) | "gpu" (NVDEC) | "hybrid" (both)
    dtype: str = "float32"  # of the clips handed to Paddle
    # what leaves DALI: "float" (normalised CFHW in dtype) or "uint8" (FHWC, normalised by
    # loader.bridge on the consumer's device and stream); None: uint8 when handed over on the GPU
    output: str | None = None
    # where the clips are handed over: "gpu" (a CPU pipeline's clips are copied there by DALI, on
    # its own stream, so a GPU consumer never copies from pageable memory and waits for its queued
    # steps) or "host"; None: the GPU when decoding there, else the host (see clips_on_for)
    clips_on: str | None = None
    # how uint8 clips are normalised on the GPU: "kernel" (loader.handover: one kernel per chunk,
    # straight into the batch tensor) or "ops" (the framework's own: concatenate, transpose, cast,
    # subtract); "kernel" falls back to "ops" where the driver cannot run it, and says so
    handover: str = "kernel"
    # GPU path: who crops, resizes and flips NVDEC's frames: "dali" (fn.resize in the pipelines,
    # 2 kernels a chunk beside the training step) or "kernel" (the hand-over kernel, from the
    # whole frames, in the same pass as the normalisation; needs uint8 output, handover "kernel"
    # and no antialiasing; where the driver cannot run the kernel, DALI does it, and says so);
    # "auto": the kernel wherever those hold (resizer())
    gpu_resize: str = "auto"
    # GPU, hand-over kernel: where it runs (loader.staging): "step" (on the training stream, just
    # before the step that reads the batch), "side" (a high-priority stream of its own, one batch
    # ahead, beside the step before) or "rest" (the same on the SMs the training's partition
    # leaves to the loader). Other hand-overs run on the training stream whatever this says
    handover_stream: str = "step"
    mean: tuple[float, float, float] = ACTIVITYNET_MEAN
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    seed: int = 0
    num_threads: int = field(default_factory=_default_threads)
    rank: int | None = None  # None: PADDLE_TRAINER_ID (default 0)
    world_size: int | None = None  # None: PADDLE_TRAINERS_NUM (default 1)
    local_ranks: int | None = None  # ranks on this host: None: PADDLE_LOCAL_SIZE (default 1)
    start_align: int = 1  # train: random starts are multiples of this (keyframe-aligned for GPU)
    scales: tuple[float, ...] = HARA_SCALES
    flip: bool = True  # train: Hara's random horizontal flip (off for left/right-sensitive classes)
    clips_per_video: int = 3  # clip mode
    windows: str = "full"  # video mode: "full" windows (the paper) or "hara" (his test loader)
    # Model selection without the test split: hold out this fraction of the subset's UCF groups
    # (gGG, as the official splits do) and read `part` "kept" (the rest) or "held" (those groups)
    holdout: float = 0.0
    part: str = "all"
    drop_last: bool = False  # train only: equal number of full batches on every rank
    prefetch: int = 2  # DALI prefetch queue depth
    # take DALI's outputs in a loader thread up to this many batches ahead of the consumer (0: in
    # the consumer's thread); the hand-over to the framework stays in the consumer (loader.ahead)
    thread_ahead: int = 0
    # run every other thread of the process (DALI's, loader.ahead's) at this nice value or more,
    # so the consumer's thread gets a core when it needs one (loader.nice); 0: leave them
    loader_nice: int = 0
    verify: bool = False  # check each video's sha256 against the manifest when read
    # resize antialiasing only matters when shrinking (scale-1 crops, eval 128 -> 112: factor
    # 0.875, where it barely changes pixels); off is ~20 % faster on the CPU (docs/BENCHMARKS.md)
    antialias: bool = False
    # CPU path: feed DALI only the WebM clusters (GOPs) a clip needs; its in-memory decoder
    # otherwise decodes from frame 0 (loader/webm.py, docs/BENCHMARKS.md)
    trim: bool = True
    cache_dir: Path | None = None  # GPU path: local verified file cache
    gpu_pipelines: int = 24  # GPU path: concurrent readers.video pipelines (NVDEC needs many)
    gpu_batch: int = 16  # GPU path: clips per pipeline iteration (batches are cut into these)
    gpu_threads: int = 2  # GPU path: CPU threads per pipeline
    # GPU path: clips planned ahead per set of pipelines. None (auto): the whole run where its
    # last epoch is known and the pipelines' open files fit in half the host's available memory,
    # else 50,000 (loader.gpu.GpuBackend.segment_clips)
    gpu_segment_clips: int | None = None
    # GPU path: the last epoch the run takes (None: no end); no segment plans past it, so with
    # gpu_segment_clips >= the run's clips one set of pipelines serves the whole run
    gpu_last_epoch: int | None = None
    # GPU path: check each chunk's file-list lines (plan order) this many chunks after it is taken
    # (0: at once; reading them waits for the chunk's GPU work, which a few chunks later is done)
    gpu_check_lag: int = 0
    # GPU path: readers.video opens and indexes its files on its first run, in its own thread,
    # instead of in Pipeline.build, which holds Python's lock (the GIL) throughout: a segment built
    # in the background would otherwise stop the training thread for as long (loader.gpu)
    gpu_lazy_init: bool = False
    # GPU path: seconds between two pipelines shut down (or two built) in the background. Freeing a
    # pipeline holds the GIL too; one at a time, each such stop is shorter than the steps queued on
    # the device (0: all at once)
    gpu_pace_s: float = 0.05
    # hybrid: the share of every batch the CPU backend decodes (its last clips); None: adapt it
    # to the measured rates of the two paths (loader.hybrid)
    cpu_share: float | None = None
    device_id: int | None = None  # GPU path: None = FLAGS_selected_gpus (Paddle launcher) or 0

    def __post_init__(self) -> None:
        # accept str paths from callers, store Paths (frozen: use object.__setattr__)
        for name in ("manifests", "shards", "cache_dir"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        for name in ("mean", "std", "scales"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        self._check()

    def _check(self) -> None:
        choices = {"subset": ondisk.SUBSETS, "mode": MODES, "decode": DECODES, "dtype": DTYPES,
                   "output": (None, *OUTPUTS), "clips_on": (None, *CLIPS_ON), "windows": WINDOWS,
                   "part": PARTS, "handover": HANDOVERS, "gpu_resize": GPU_RESIZES,
                   "handover_stream": HANDOVER_STREAMS}  # fmt: skip
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed:
                listed = ", ".join(map(str, allowed))
                raise ValueError(f"{name} must be one of {listed}, got {value!r}")
        positive = (
            "batch_size",
            "clip_len",
            "size",
            "num_threads",
            "start_align",
            "clips_per_video",
            "prefetch",
            "gpu_pipelines",
            "gpu_batch",
            "gpu_threads",
            "gpu_segment_clips",
        )
        for name in positive:
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.thread_ahead < 0:
            raise ValueError(f"thread_ahead must be >= 0, got {self.thread_ahead}")
        if self.gpu_last_epoch is not None and self.gpu_last_epoch < 0:
            raise ValueError(f"gpu_last_epoch must be >= 0, got {self.gpu_last_epoch}")
        if self.gpu_check_lag < 0:
            raise ValueError(f"gpu_check_lag must be >= 0, got {self.gpu_check_lag}")
        if not 0 <= self.gpu_pace_s <= 10:
            raise ValueError(f"gpu_pace_s must be in 0..10 seconds, got {self.gpu_pace_s}")
        if not 0 <= self.loader_nice <= 19:
            raise ValueError(f"loader_nice must be in 0..19, got {self.loader_nice}")
        if self.clips_on == "host" and self.decode != "cpu":
            raise ValueError(f"clips_on 'host' needs decode='cpu' ({self.decode!r} decodes on "
                             "the GPU)")  # fmt: skip
        if self.gpu_resize == "kernel" and not self._kernel_can_crop():
            raise ValueError("gpu_resize 'kernel' crops NVDEC's frames in the hand-over kernel: "
                             "it needs decode 'gpu', uint8 output, handover 'kernel' and no "
                             "antialias")  # fmt: skip
        if self.cpu_share is not None and not 0 <= self.cpu_share < 1:
            raise ValueError(f"cpu_share must be in [0, 1), got {self.cpu_share}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need 3 values each, std > 0")
        if self.windows == "hara" and self.mode == "video" and self.decode == "gpu":
            raise ValueError("windows 'hara' loop-pads the last window, which decode='gpu' "
                             "cannot (whole windows only); use decode='cpu'")  # fmt: skip
        if not 0 <= self.holdout < 1 or (self.part == "all") != (self.holdout == 0):
            raise ValueError(f"holdout {self.holdout} with part {self.part!r}: a fraction in "
                             "(0, 1) goes with part 'kept' or 'held', 0 with 'all'")  # fmt: skip
        if not self.scales or not all(0 < s <= 1 for s in self.scales):
            raise ValueError(f"scales must be in (0, 1], got {self.scales}")
        rank, world = self.dist()
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} out of range for world size {world}")
        if self.local_ranks is not None and self.local_ranks < 1:
            raise ValueError(f"local_ranks must be >= 1, got {self.local_ranks}")

    def clips_device(self) -> str:
        """Where the clips are handed over: "gpu" or "host" (clips_on, or what decode implies)."""
        if self.clips_on is not None:
            return self.clips_on
        return "host" if self.decode == "cpu" else "gpu"

    def stages_handover(self) -> bool:
        """Whether batches are handed over one ahead on a stream of their own (handover_stream
        "side" or "rest", on the GPU, uint8 clips through the hand-over kernel)."""
        return (self.handover_stream != "step" and self.clips_device() == "gpu"
                and self.clip_output() == "uint8" and self.handover == "kernel")  # fmt: skip

    def _kernel_can_crop(self) -> bool:
        return (self.decode == "gpu" and self.clip_output() == "uint8"
                and self.handover == "kernel" and not self.antialias)  # fmt: skip

    def resizer(self) -> str:
        """Who is to crop and resize NVDEC's frames: "kernel" (loader.handover) or "dali"
        (gpu_resize, or for "auto" the kernel wherever it can: see the field's comment)."""
        if self.gpu_resize == "auto":
            return "kernel" if self._kernel_can_crop() else "dali"
        return self.gpu_resize

    def clip_output(self) -> str:
        """What DALI hands over: "uint8" (consumer normalises) or "float" (normalised in DALI)."""
        if self.output is not None:
            return self.output
        return "float" if self.clips_device() == "host" else "uint8"

    def dist(self) -> tuple[int, int]:
        """(rank, world_size): explicit values, else Paddle's launcher environment, else (0, 1)."""
        rank = self.rank if self.rank is not None else int(os.environ.get("PADDLE_TRAINER_ID", 0))
        world = (
            self.world_size
            if self.world_size is not None
            else int(os.environ.get("PADDLE_TRAINERS_NUM", 1))
        )
        return rank, world

    def host_ranks(self) -> int:
        """Ranks on this host, each with its own loader: explicit, else the launcher's."""
        return self.local_ranks if self.local_ranks is not None else local_size()

    def gpu_device(self) -> int:
        """The GPU this process decodes on: explicit, else the one Paddle's launcher selected."""
        if self.device_id is not None:
            return self.device_id
        return int(os.environ.get("FLAGS_selected_gpus", "0").split(",")[0])

    @property
    def manifest_path(self) -> Path:
        return self.manifests / ondisk.manifest_name(self.split, self.subset)

    @property
    def summary_path(self) -> Path:
        return self.manifests / ondisk.summary_name(self.split)

    def to_dict(self) -> dict:
        """JSON-ready dict of the resolved config (rank/world filled in)."""
        d = asdict(self)
        d["rank"], d["world_size"] = self.dist()
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


def local_size() -> int:
    """The ranks Paddle's launcher started on this host (PADDLE_LOCAL_SIZE); 1 without it."""
    return max(1, int(os.environ.get("PADDLE_LOCAL_SIZE", 1)))


def clips_on_for(device: str, decode: str) -> str:
    """Where a consumer on `device` ("gpu" or "cpu") should get its clips: on the GPU when it
    trains there or they are decoded there, else in host memory."""
    return "gpu" if device == "gpu" or decode != "cpu" else "host"
