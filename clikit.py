"""ucf3d command line's shared pieces: progress bars, error handling, option types and options
used by more than one command (cli.py's commands and clibench.py's)."""

from __future__ import annotations

import functools
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def progress_bar(desc: str, total: int | None = None) -> Callable[[int], None] | None:
    """A tqdm-backed progress callback when stderr is a terminal, else None (library logs)."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="video", leave=False)

    def update(n: int = 1, total: int | None = None) -> None:
        if total is not None and bar.total != total:
            bar.total = total
            bar.refresh()
        bar.update(n)

    return update


def library_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Library errors become `Error: ...` and exit 1; --debug shows the traceback instead."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (click.ClickException, click.Abort, SystemExit):
            raise
        except ImportError as e:  # no Paddle (train.install's one-line message); others: a bug
            if e.name != "paddle" or click.get_current_context().find_root().obj.get("debug"):
                raise
            raise click.ClickException(str(e)) from e
        except KeyboardInterrupt as e:  # Ctrl-C: the shell convention, 128 + SIGINT
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # more Ctrl-Cs: no traceback mid-exit
            if click.get_current_context().find_root().obj.get("debug"):
                traceback.print_exc()
            click.echo(f"Interrupted{': ' + str(e) if str(e) else '.'}", err=True)
            sys.exit(130)
        except (OSError, ValueError, RuntimeError) as e:
            if click.get_current_context().find_root().obj.get("debug"):
                raise
            raise click.ClickException(rank_prefix() + str(e)) from e

    return wrapper


def rank_prefix() -> str:
    """`rank R of W: ` under paddle.distributed.launch (one error line per rank), else nothing."""
    import os

    world = int(os.environ.get("PADDLE_TRAINERS_NUM", 1))
    return f"rank {os.environ.get('PADDLE_TRAINER_ID', 0)} of {world}: " if world > 1 else ""


_SIZE_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "KI": 2**10, "MI": 2**20, "GI": 2**30}


class ByteSize(click.ParamType):
    """64MB, 500k, 1GiB or a plain number of bytes."""

    name = "size"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int):
            return value
        import re

        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?[iI]?)[bB]?\s*", str(value))
        if not m or m.group(2).upper() not in _SIZE_UNITS:
            self.fail(f"{value!r} is not a size like 64MB, 500k or 1GiB", param, ctx)
        return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).upper()])


class Finite(click.FloatRange):
    """A float range that also refuses nan and inf (which FloatRange lets through)."""

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        import math

        v = super().convert(value, param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return v


existing_dir = click.Path(exists=True, file_okay=False, path_type=Path)
ffmpeg_option = click.option(
    "--ffmpeg", envvar="UCF3D_FFMPEG", default=None, metavar="PATH",
    help="ffmpeg binary (default: $UCF3D_FFMPEG, else the one imageio-ffmpeg ships).",
)  # fmt: skip
jobs_option = click.option(
    "--jobs", "-j", type=click.IntRange(0), default=0, show_default=True,
    help="Parallel ffmpeg processes (0: all cores).",
)  # fmt: skip


dataset_option = click.option(
    "--dataset", type=click.Choice(["ucf101", "hmdb51"]), default="ucf101", show_default=True,
    help="hmdb51: HMDB-51's layout (<class>/<video>.avi) and <class>_test_split<N>.txt lists.",
)  # fmt: skip
