"""Which PaddlePaddle is installed: a one-line error without one, a diagnosis of a mixed install.

Paddle is not a core dependency (Paddle's ecosystem convention: PaddleOCR and PaddleVideo leave
the framework to the user), because the CPU build `paddlepaddle` and the CUDA build
`paddlepaddle-gpu` are different distributions that write the same `paddle/` package: pulling
one in over the other silently breaks it. `pip install -e ".[cpu]"` adds the CPU build; GPU
machines install `paddlepaddle-gpu` from Paddle's own package index (README, step 3).

Nothing here imports paddle: `import train` runs require_paddle() before any module that does.
"""

from __future__ import annotations

import importlib.util
import re
from importlib import metadata

DISTRIBUTIONS = ("paddlepaddle", "paddlepaddle-gpu")  # CPU build, CUDA build
MIN_VERSION = (3, 1)  # KaimingNormal(mode=...) (train.models) needs Paddle 3.1
PADDLE_MISSING = (
    "PaddlePaddle is not installed: pip install 'paddlepaddle>=3.1' (the CPU build; in a checkout "
    "pip install -e '.[cpu]'), or paddlepaddle-gpu>=3.1 from Paddle's package index for CUDA "
    "(README, step 3)"
)


def installed_distributions() -> dict[str, str]:
    """The Paddle distributions pip knows as installed, name -> version."""
    found = {}
    for name in DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def _too_old(version: str) -> bool:
    parts = tuple(int(p) for p in re.findall(r"\d+", version)[:2])
    return parts != (0, 0) and parts < MIN_VERSION  # 0.0.0: Paddle's develop builds


def require_paddle() -> None:
    """ImportError (name "paddle") naming both distributions when paddle is missing or too old."""
    if importlib.util.find_spec("paddle") is None:
        raise ImportError(PADDLE_MISSING, name="paddle")
    found = installed_distributions()
    if len(found) == 1:  # two: a mixed install, diagnosed by mixed_install()
        ((name, version),) = found.items()
        if _too_old(version):
            want = ".".join(map(str, MIN_VERSION))
            raise ImportError(
                f"ucf3d needs PaddlePaddle >= {want}, {name} {version} is installed: "
                f"pip install -U 'paddlepaddle>={want}' (CPU) or paddlepaddle-gpu>={want} from "
                "Paddle's package index (CUDA)",
                name="paddle",
            )


def mixed_install() -> str | None:
    """A warning when both builds are installed: each overwrites the other's files in paddle/."""
    found = installed_distributions()
    if len(found) < 2:
        return None
    both = " and ".join(f"{name} {version}" for name, version in found.items())
    return (
        f"both {both} are installed; they share the paddle/ package, so the last one installed "
        "overwrote the other's files. Keep one: pip uninstall -y paddlepaddle paddlepaddle-gpu, "
        "then install the one you need (README, step 3)"
    )


def gpu_build_problem(compiled_with_cuda: bool, version: str) -> str | None:
    """Why --device gpu cannot run on this Paddle, or None when it can."""
    if compiled_with_cuda:
        return None
    mixed = mixed_install()
    return (
        f"--device gpu needs a CUDA build of Paddle, this is paddle {version} built for CPU; "
        + (mixed if mixed else "install paddlepaddle-gpu from Paddle's package index (README, "
           "step 3) in place of paddlepaddle")
        + ", or use --device cpu"
    )  # fmt: skip
